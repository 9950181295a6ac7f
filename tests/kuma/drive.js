// Drives a real Uptime Kuma through kuma-cluster the way a browser would:
// loads the UI and its assets, runs first-run setup, logs in over the socket.io
// websocket, adds a monitor and waits to see it listed.
// Usage: NODE_PATH=<kuma install>/node_modules node drive.js http://127.0.0.1:<port>
// Prints one JSON line with what it saw; exits 1 on any failure.
"use strict";
const { io } = require("socket.io-client");

const base = process.argv[2];
const cookies = new Map();
const routedTo = new Set();

function remember(response) {
    for (const line of response.headers.getSetCookie()) {
        const [pair] = line.split(";");
        const [name, value] = pair.split("=");
        cookies.set(name.trim(), value.trim());
    }
    routedTo.add(response.headers.get("x-routed-to"));
}

function cookieHeader() {
    return [...cookies].map(([k, v]) => `${k}=${v}`).join("; ");
}

async function get(path) {
    const response = await fetch(base + path, { redirect: "manual", headers: { cookie: cookieHeader() } });
    remember(response);
    return response;
}

function emit(socket, event, ...args) {
    return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no answer to ${event}`)), 20000);
        socket.emit(event, ...args, (answer) => {
            clearTimeout(timer);
            resolve(answer);
        });
    });
}

async function main() {
    const root = await get("/");
    if (![200, 301, 302].includes(root.status)) throw new Error(`/ answered ${root.status}`);
    const page = await get("/dashboard");
    if (page.status !== 200) throw new Error(`/dashboard answered ${page.status}`);
    const html = await page.text();
    const assets = [...html.matchAll(/(?:src|href)="(\/assets\/[^"]+)"/g)].map((m) => m[1]);
    if (assets.length === 0) throw new Error("the dashboard page names no assets");
    for (const asset of assets) {
        const response = await get(asset);
        const body = await response.arrayBuffer();
        if (response.status !== 200 || body.byteLength === 0) throw new Error(`${asset} answered ${response.status}`);
    }

    const socket = io(base, {
        transports: [ "websocket" ],
        reconnection: false,
        extraHeaders: { cookie: cookieHeader(), origin: base },
    });
    await new Promise((resolve, reject) => {
        socket.on("connect", resolve);
        socket.on("connect_error", reject);
    });
    const lists = [];
    socket.on("monitorList", (list) => lists.push(list));

    const needSetup = await emit(socket, "needSetup");
    const setup = await emit(socket, "setup", "admin", "kc-Passw0rd-2026");
    if (!setup.ok) throw new Error(`setup: ${setup.msg}`);
    const login = await emit(socket, "login", { username: "admin", password: "kc-Passw0rd-2026", token: "" });
    if (!login.ok || !login.token) throw new Error(`login: ${login.msg}`);
    const added = await emit(socket, "add", {
        type: "http",
        name: "kc-proxied-monitor",
        parent: null,
        url: "http://127.0.0.1:9/",
        method: "GET",
        interval: 60,
        retryInterval: 60,
        resendInterval: 0,
        maxretries: 0,
        timeout: 48,
        notificationIDList: {},
        ignoreTls: false,
        upsideDown: false,
        packetSize: 56,
        expiryNotification: false,
        maxredirects: 10,
        accepted_statuscodes: [ "200-299" ],
        dns_resolve_type: "A",
        dns_resolve_server: "1.1.1.1",
        docker_container: "",
        docker_host: null,
        proxyId: null,
        mqttUsername: "",
        mqttPassword: "",
        mqttTopic: "",
        mqttSuccessMessage: "",
        authMethod: null,
        oauth_auth_method: "client_secret_basic",
        httpBodyEncoding: "json",
        kafkaProducerBrokers: [],
        kafkaProducerSaslOptions: { mechanism: "None" },
        gamedigGivenPortOnly: true,
    });
    if (!added.ok) throw new Error(`add: ${added.msg}`);

    const deadline = Date.now() + 20000;
    let listed = null;
    while (!listed && Date.now() < deadline) {
        for (const list of lists) {
            const monitor = list[added.monitorID] || list[String(added.monitorID)];
            if (monitor && monitor.name === "kc-proxied-monitor") listed = monitor.name;
        }
        await new Promise((r) => setTimeout(r, 100));
    }
    if (!listed) throw new Error("the new monitor never appeared in monitorList");
    socket.close();
    console.log(JSON.stringify({
        rootStatus: root.status,
        assets: assets.length,
        needSetup,
        loggedIn: true,
        monitorID: added.monitorID,
        listed,
        routedTo: [...routedTo].filter(Boolean),
        stickyCookie: cookies.get("KUMA_CLUSTER_NODE") || null,
    }));
}

main().then(() => process.exit(0), (e) => {
    console.error(e.stack || String(e));
    process.exit(1);
});
