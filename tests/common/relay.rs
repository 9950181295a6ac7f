//! A controllable TCP relay for fault injection: put it between kuma-cluster
//! and MariaDB, or between kuma-cluster and a node, then switch what it does
//! while the test runs. Plain threads and blocking sockets, so it works under
//! any runtime and keeps working while the process under test is frozen.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the relay does with connections, new and open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forwards both ways.
    Pass,
    /// Nothing listens: new connections are refused; open ones are reset.
    Refuse,
    /// Accepts, then resets at once; open connections are reset too.
    Reset,
    /// Accepts and reads, but forwards nothing either way: every client waits.
    Blackhole,
}

impl Fault {
    fn code(self) -> u8 {
        self as u8
    }

    fn from_code(code: u8) -> Fault {
        [Fault::Pass, Fault::Refuse, Fault::Reset, Fault::Blackhole][usize::from(code)]
    }
}

struct Shared {
    target: SocketAddr,
    fault: AtomicU8,
    /// Added before each chunk is forwarded, in milliseconds.
    latency_ms: AtomicU64,
    stop: AtomicBool,
    /// Every socket the relay holds, so a fault can reset them.
    open: Mutex<Vec<TcpStream>>,
    /// Armed by [`Relay::reset_at`]: the bytes to watch for on the way to the
    /// target, and whether they are delivered before the reset.
    trigger: Mutex<Option<(Vec<u8>, bool)>>,
    /// Answers from the target wait while a triggered reset is under way.
    holding_answers: AtomicBool,
}

impl Shared {
    fn fault(&self) -> Fault {
        Fault::from_code(self.fault.load(Ordering::SeqCst))
    }
}

/// A relay on `127.0.0.1:<port>` to `target`; stops when dropped.
pub struct Relay {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

const POLL: Duration = Duration::from_millis(5);

impl Relay {
    pub fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("the relay binds");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            target,
            fault: AtomicU8::new(Fault::Pass.code()),
            latency_ms: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            open: Mutex::default(),
            trigger: Mutex::default(),
            holding_answers: AtomicBool::new(false),
        });
        let s = shared.clone();
        std::thread::spawn(move || accept_loop(listener, addr, s));
        Relay { addr, shared }
    }

    /// Switches the fault; open connections follow at once (reset, or frozen).
    pub fn set(&self, fault: Fault) {
        self.shared.fault.store(fault.code(), Ordering::SeqCst);
        if matches!(fault, Fault::Refuse | Fault::Reset) {
            reset_all(&self.shared);
        }
    }

    /// Resets every connection, once, when a client sends `pattern` (say, a
    /// `COMMIT`): before the target got it, or just after (`delivered`), when
    /// only the answer is lost.
    pub fn reset_at(&self, pattern: &[u8], delivered: bool) {
        *self.shared.trigger.lock().unwrap() = Some((pattern.to_vec(), delivered));
    }

    /// Whether the armed reset has happened.
    pub fn has_reset(&self) -> bool {
        self.shared.trigger.lock().unwrap().is_none()
    }

    pub fn set_latency(&self, latency: Duration) {
        self.shared.latency_ms.store(latency.as_millis() as u64, Ordering::SeqCst);
    }

    /// `url` (a `scheme://user@host:port/path` URL) pointed at the relay instead.
    pub fn url_for(&self, url: &str) -> String {
        let target = self.shared.target.to_string();
        let swapped = url.replacen(&target, &self.addr.to_string(), 1);
        assert_ne!(swapped, url, "{url} does not name {target}");
        swapped
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        reset_all(&self.shared);
    }
}

fn reset_all(shared: &Shared) {
    for socket in shared.open.lock().unwrap().drain(..) {
        // a zero linger makes the close a reset, as a crashed peer's would be
        let _ = socket2::SockRef::from(&socket).set_linger(Some(Duration::ZERO));
        let _ = socket.shutdown(Shutdown::Both);
    }
}

fn accept_loop(listener: TcpListener, addr: SocketAddr, shared: Arc<Shared>) {
    let mut listener = Some(listener);
    while !shared.stop.load(Ordering::SeqCst) {
        match (shared.fault(), &listener) {
            // refusing: nothing may listen on the port
            (Fault::Refuse, Some(_)) => listener = None,
            (Fault::Refuse, None) => std::thread::sleep(POLL),
            (_, None) => match TcpListener::bind(addr) {
                Ok(l) => listener = Some(l),
                Err(_) => std::thread::sleep(POLL),
            },
            (fault, Some(l)) => {
                l.set_nonblocking(true).unwrap();
                match l.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        if fault == Fault::Reset {
                            let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
                            drop(client);
                        } else {
                            let s = shared.clone();
                            std::thread::spawn(move || connect(client, s));
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL),
                    Err(_) => std::thread::sleep(POLL),
                }
            }
        }
    }
}

/// Opens the upstream side and pumps both ways; a blackhole holds the client
/// without ever connecting upstream.
fn connect(client: TcpStream, shared: Arc<Shared>) {
    shared.open.lock().unwrap().push(client.try_clone().unwrap());
    while shared.fault() == Fault::Blackhole {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        std::thread::sleep(POLL);
    }
    let Ok(upstream) = TcpStream::connect(shared.target) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    shared.open.lock().unwrap().push(upstream.try_clone().unwrap());
    let (c, u) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
    let s = shared.clone();
    std::thread::spawn(move || pump(c, u, s, true));
    pump(upstream, client, shared, false);
}

/// Takes the armed trigger if `chunk` on its way to the target holds its pattern.
fn triggered(shared: &Shared, chunk: &[u8]) -> Option<bool> {
    let mut trigger = shared.trigger.lock().unwrap();
    let hit = trigger.as_ref().is_some_and(|(pattern, _)| chunk.windows(pattern.len()).any(|w| w == pattern.as_slice()));
    hit.then(|| trigger.take().map(|(_, delivered)| delivered)).flatten()
}

fn pump(mut from: TcpStream, mut to: TcpStream, shared: Arc<Shared>, to_target: bool) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // frozen: the bytes wait here, as in a network that stopped delivering
        while (shared.fault() == Fault::Blackhole || (!to_target && shared.holding_answers.load(Ordering::SeqCst)))
            && !shared.stop.load(Ordering::SeqCst)
        {
            std::thread::sleep(POLL);
        }
        let latency = shared.latency_ms.load(Ordering::SeqCst);
        if latency > 0 {
            std::thread::sleep(Duration::from_millis(latency));
        }
        if let Some(delivered) = to_target.then(|| triggered(&shared, &buf[..n])).flatten() {
            if delivered {
                // the target acts on it; its answer is what gets lost
                shared.holding_answers.store(true, Ordering::SeqCst);
                let _ = to.write_all(&buf[..n]);
                std::thread::sleep(Duration::from_millis(200));
            }
            reset_all(&shared);
            shared.holding_answers.store(false, Ordering::SeqCst);
            break;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
