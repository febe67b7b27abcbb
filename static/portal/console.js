// The desktop page: follow the launch's progress, then open the console through the broker's
// gateway: noVNC for VNC, spice-html5 for SPICE (the pool chooses; the user may switch where the
// pool allows). The websockets are opened here (ConsoleSocket) so the gateway's close code and
// reason can be shown, and the round-trip time measured.
import RFB from "../vendor/novnc/core/rfb.js";
import { ConsoleSocket, keyFor } from "./console-socket.js";

const app = document.getElementById("desktop-app");
const statusUrl = app.dataset.statusUrl;
const ticketUrl = app.dataset.ticketUrl;
const csrfToken = document.querySelector("input[name=csrfmiddlewaretoken]").value;
const startedAt = performance.now();

const el = (id) => document.getElementById(id);
const consoleState = (window.vdiConsole = {
  phase: "launching", protocol: null, closeCode: null, closeReason: "", rttMs: null, reconnects: 0,
});

// --- messages for the user (an admin's, a warning before an idle close) ------------------
consoleState.notices = [];
window.addEventListener("vdi-notice", (event) => {
  const { text, level } = event.detail || {};
  if (!text) return;
  consoleState.notices.push({ text, level });
  el("console-notice-text").textContent = text;
  el("console-notice").className = `notice ${level === "warning" ? "warning" : "info"}`;
  el("console-notice").hidden = false;
});
el("console-notice-close").addEventListener("click", () => {
  el("console-notice").hidden = true;
});

// --- launch progress -------------------------------------------------------------------
function renderSteps(progress) {
  const list = el("steps");
  list.replaceChildren(
    ...progress.steps.map((step) => {
      const item = document.createElement("li");
      item.className = `step ${step.status}`;
      item.dataset.state = step.state;
      item.textContent = step.label;
      return item;
    }),
  );
  const why = el("launch-why");
  why.textContent = progress.why && progress.why.code !== "failed" ? progress.why.summary : "";
  why.dataset.why = progress.why ? progress.why.code : "";
  why.hidden = !why.textContent;
  el("elapsed").textContent = `${progress.state_label} · ${((performance.now() - startedAt) / 1000).toFixed(1)} s`;
}

// The steps arrive live over a websocket (portal/consumers.py) as each happens; where that
// cannot open (a proxy without websockets, Redis away), the page asks the portal every 400 ms.
function followLaunchLive() {
  return new Promise((resolve) => {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    let socket;
    try {
      socket = new WebSocket(`${scheme}://${location.host}${app.dataset.progressPath}`);
    } catch (error) {
      resolve(false);
      return;
    }
    let settled = false;
    const finish = (handled) => {
      if (!settled) {
        settled = true;
        resolve(handled);
      }
    };
    socket.onmessage = (event) => {
      const progress = JSON.parse(event.data);
      renderSteps(progress);
      if (progress.ready) {
        finish(true);
        openConsole();
      } else if (progress.failed) {
        finish(true);
        showLaunchError(`${progress.error || "The desktop could not be started."} ${progress.hint}`);
      }
    };
    socket.onclose = () => finish(false);
    socket.onerror = () => finish(false);
  });
}

async function followLaunch() {
  if (app.dataset.progressPath && (await followLaunchLive())) return;
  for (;;) {
    let progress;
    try {
      const response = await fetch(statusUrl, { headers: { Accept: "application/json" } });
      if (response.status === 404) {
        showLaunchError("This desktop no longer exists. Go back to My desktops and launch again.");
        return;
      }
      if (response.redirected || !response.ok) throw new Error(`status ${response.status}`);
      progress = await response.json();
    } catch (error) {
      el("elapsed").textContent = "Lost contact with the portal; retrying…";
      await sleep(2000);
      continue;
    }
    renderSteps(progress);
    if (progress.ready) return openConsole();
    if (progress.failed) {
      showLaunchError(`${progress.error || "The desktop could not be started."} ${progress.hint}`);
      return;
    }
    await sleep(400);
  }
}

function showLaunchError(text) {
  consoleState.phase = "failed";
  el("launch-error-text").textContent = text;
  el("launch-error").hidden = false;
}

// --- console ---------------------------------------------------------------------------
// Closes worth retrying on their own: a dropped network link, a restarting server, a desktop
// console that did not answer, a one-time password replaced by another tab's console.
const TRANSIENT = new Set([null, 1001, 1006, 1011, 1012, 4502, 4503]);
const MAX_ATTEMPTS = 5;
let chosenProtocol = app.dataset.protocol;
const canSwitch = app.dataset.protocolSwitch === "true";
let current = null; // { protocol, socket, stop(), ctrlAltDel(), typeText(text), focus() }
let attempts = 0;
let reconnectTimer = null;

async function openConsole() {
  clearTimeout(reconnectTimer);
  consoleState.phase = "connecting";
  el("progress").hidden = true;
  el("console").hidden = false;
  setStatus(attempts ? `Reconnecting (attempt ${attempts} of ${MAX_ATTEMPTS})…` : "Connecting…");
  el("btn-reconnect").hidden = true;
  setConnectedControls(false);

  let ticket;
  try {
    const response = await fetch(ticketUrl, {
      method: "POST",
      headers: { "X-CSRFToken": csrfToken },
      body: new URLSearchParams({ protocol: chosenProtocol }),
    });
    ticket = await response.json();
    if (!response.ok) {
      const refusal = new Error(ticket.error || `HTTP ${response.status}`);
      refusal.final = response.status === 403 || response.status === 409;
      throw refusal;
    }
  } catch (error) {
    return connectionLost(error.final ? 0 : null, `Could not get a console ticket: ${error.message}`);
  }
  consoleState.protocol = ticket.protocol;
  el("screen").replaceChildren();
  current = ticket.protocol === "spice" ? await openSpice(ticket) : openVnc(ticket);
  current.socket.onrtt = showRtt;
}

function onConnected() {
  attempts = 0;
  consoleState.phase = "connected";
  consoleState.connectedAfterMs = performance.now() - startedAt;
  setStatus(`Connected (${current.protocol.toUpperCase()})`);
  setConnectedControls(true);
  current.focus();
}

function onClosed(socket, fallbackReason) {
  if (!current || current.socket !== socket || current.stopping) return;
  current = null;
  connectionLost(socket.closeCode, socket.closeReason || fallbackReason);
}

// noVNC. The gateway logs in to the desktop itself and offers noVNC "no authentication": no
// password is ever sent to this page.
function openVnc(ticket) {
  const socket = new ConsoleSocket(ticket.url, ["binary"]);
  const rfb = new RFB(el("screen"), socket, ticket.password ? { credentials: { password: ticket.password } } : {});
  rfb.scaleViewport = el("btn-scale").getAttribute("aria-pressed") === "true";
  rfb.background = "#111";
  rfb.addEventListener("connect", onConnected);
  // The socket's close event has fired by now; it carries the gateway's reason.
  rfb.addEventListener("disconnect", () => setTimeout(() => onClosed(socket, ""), 0));
  rfb.addEventListener("securityfailure", (event) => {
    socket.closeReason = socket.closeReason || event.detail.reason || "The desktop refused the console login.";
  });
  return {
    protocol: "vnc",
    socket,
    stop() { this.stopping = true; rfb.disconnect(); },
    ctrlAltDel: () => rfb.sendCtrlAltDel(),
    focus: () => rfb.focus(),
    scale: (on) => { rfb.scaleViewport = on; },
    async typeText(text) {
      rfb.clipboardPasteFrom(text); // for guests with a clipboard agent
      for (const char of text) {
        const key = keyFor(char);
        if (!key) continue;
        const keysym = char === "\n" ? 0xff0d : char === "\t" ? 0xff09 : char.codePointAt(0);
        if (key.shift) rfb.sendKey(0xffe1, "ShiftLeft", true);
        rfb.sendKey(keysym, key.code, true);
        rfb.sendKey(keysym, key.code, false);
        if (key.shift) rfb.sendKey(0xffe1, "ShiftLeft", false);
        await sleep(15);
      }
    },
  };
}

// spice-html5. It opens one websocket per channel to the same URL, with the global WebSocket:
// that is a ConsoleSocket while it connects. SPICE's one-time password comes with the ticket
// and expires within seconds.
async function openSpice(ticket) {
  const Spice = await import("../vendor/spice-html5/src/main.js");
  const Inputs = await import("../vendor/spice-html5/src/inputs.js");
  const sockets = [];
  window.WebSocket = class extends ConsoleSocket {
    constructor(url, protocols) {
      super(url, protocols);
      sockets.push(this);
    }
  };
  let session;
  const connection = new Spice.SpiceMainConn({
    uri: ticket.url,
    password: ticket.password,
    screen_id: "screen",
    onsuccess: onConnected,
    onerror: (error) => onClosed(sockets[0], error && error.message),
  });
  window.sc = connection; // spice-html5's sendCtrlAltDel reads the global `sc`
  const key = (down, keyCode) => {
    const handler = down ? Inputs.handle_keydown : Inputs.handle_keyup;
    handler.call({ sc: connection }, { keyCode, shiftKey: false, ctrlKey: false, altKey: false, metaKey: false,
      preventDefault() {} });
  };
  session = {
    protocol: "spice",
    socket: sockets[0],
    stop() { this.stopping = true; connection.stop(); sockets.forEach((s) => s.close()); },
    ctrlAltDel: () => Spice.sendCtrlAltDel(),
    focus: () => {
      // spice-html5 listens for keys on its canvas, which needs a tabindex to take the focus.
      const canvas = el("screen").querySelector("canvas");
      if (canvas) {
        canvas.tabIndex = 0;
        canvas.focus();
      }
    },
    scale: () => {},
    async typeText(text) {
      for (const char of text) {
        const k = keyFor(char);
        if (!k) continue;
        if (k.shift) key(true, 16);
        key(true, k.keyCode);
        key(false, k.keyCode);
        if (k.shift) key(false, 16);
        await sleep(15);
      }
    },
  };
  return session;
}

function connectionLost(code, reason) {
  setConnectedControls(false);
  consoleState.phase = "disconnected";
  consoleState.closeCode = code;
  consoleState.closeReason = reason || "";
  const message = reason || (code === 1006 ? "The connection dropped." : "The console was closed.");
  if (TRANSIENT.has(code) && attempts < MAX_ATTEMPTS) {
    attempts += 1;
    consoleState.reconnects += 1;
    // 1012 is the broker asking for a reconnect (the desktop moved to another host): the new
    // place is ready, so the first try goes at once; others back off.
    const wait = code === 1012 && attempts === 1 ? 100 : Math.min(1000 * 2 ** (attempts - 1), 8000);
    setStatus(`${message} Reconnecting in ${wait / 1000} s (attempt ${attempts} of ${MAX_ATTEMPTS})…`, "warning");
    reconnectTimer = setTimeout(openConsole, wait);
    return;
  }
  setStatus(`${message}${code ? ` (code ${code})` : ""}`, "error");
  el("btn-reconnect").hidden = false;
}

function setStatus(text, kind = "") {
  const status = el("console-status");
  status.textContent = text;
  status.dataset.kind = kind;
}

function showRtt(ms) {
  consoleState.rttMs = ms;
  el("console-rtt").textContent = `RTT ${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms`;
}

function setConnectedControls(on) {
  for (const id of ["btn-cad", "btn-paste"]) el(id).disabled = !on;
  if (!on) el("console-rtt").textContent = "";
}

function switchProtocol() {
  chosenProtocol = (consoleState.protocol || chosenProtocol) === "vnc" ? "spice" : "vnc";
  el("btn-protocol").textContent = `Switch to ${chosenProtocol === "vnc" ? "SPICE" : "VNC"}`;
  if (current) current.stop();
  current = null;
  attempts = 0;
  openConsole();
}

async function pasteIntoDesktop() {
  if (!current) return;
  let text = null;
  try {
    text = await navigator.clipboard.readText();
  } catch (error) {
    text = window.prompt("Text to type into the desktop:");
  }
  if (text) {
    setStatus(`Typing ${text.length} characters from the clipboard…`);
    await current.typeText(text);
    if (current) setStatus(`Connected (${current.protocol.toUpperCase()})`);
  }
  if (current) current.focus();
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

el("screen").addEventListener("mousedown", () => current && current.protocol === "spice" && current.focus());
el("btn-cad").addEventListener("click", () => current && current.ctrlAltDel());
el("btn-paste").addEventListener("click", pasteIntoDesktop);
el("btn-scale").addEventListener("click", (event) => {
  const on = event.currentTarget.getAttribute("aria-pressed") !== "true";
  event.currentTarget.setAttribute("aria-pressed", String(on));
  if (current) current.scale(on);
});
el("btn-fullscreen").addEventListener("click", () => {
  if (document.fullscreenElement) document.exitFullscreen();
  else el("console").requestFullscreen();
});
el("btn-reconnect").addEventListener("click", () => {
  attempts = 0;
  openConsole();
});
if (canSwitch) {
  el("btn-protocol").hidden = false;
  el("btn-protocol").textContent = `Switch to ${chosenProtocol === "vnc" ? "SPICE" : "VNC"}`;
  el("btn-protocol").addEventListener("click", switchProtocol);
}

followLaunch();
