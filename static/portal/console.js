// The desktop page: follow the launch's progress, then open the console through the broker's
// gateway. The websocket is opened here (not by noVNC) so the gateway's close code and reason
// can be shown to the user.
import RFB from "../vendor/novnc/core/rfb.js";

const app = document.getElementById("desktop-app");
const statusUrl = app.dataset.statusUrl;
const ticketUrl = app.dataset.ticketUrl;
const csrfToken = document.querySelector("input[name=csrfmiddlewaretoken]").value;
const startedAt = performance.now();

const el = (id) => document.getElementById(id);
const consoleState = (window.vdiConsole = { phase: "launching", closeCode: null, closeReason: "" });

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
  el("elapsed").textContent = `${progress.state_label} · ${((performance.now() - startedAt) / 1000).toFixed(1)} s`;
}

async function followLaunch() {
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
let rfb = null;
let attempts = 0;

async function openConsole() {
  consoleState.phase = "connecting";
  el("progress").hidden = true;
  el("console").hidden = false;
  setStatus("Connecting…");
  el("btn-reconnect").hidden = true;

  let ticket;
  try {
    const response = await fetch(ticketUrl, { method: "POST", headers: { "X-CSRFToken": csrfToken } });
    ticket = await response.json();
    if (!response.ok) throw new Error(ticket.error || `HTTP ${response.status}`);
  } catch (error) {
    return connectionLost(null, `Could not get a console ticket: ${error.message}`);
  }
  if (ticket.protocol !== "vnc") {
    return connectionLost(null, `This page shows VNC consoles; the pool uses ${ticket.protocol}.`);
  }

  const socket = new WebSocket(ticket.url, ["binary"]);
  socket.binaryType = "arraybuffer";
  socket.addEventListener("close", (event) => {
    consoleState.closeCode = event.code;
    consoleState.closeReason = event.reason;
  });

  rfb = new RFB(el("screen"), socket, {});
  rfb.scaleViewport = el("btn-scale").getAttribute("aria-pressed") === "true";
  rfb.background = "#111";
  rfb.addEventListener("connect", () => {
    attempts = 0;
    consoleState.phase = "connected";
    consoleState.connectedAfterMs = performance.now() - startedAt;
    setStatus("Connected");
    el("btn-cad").disabled = false;
    rfb.focus();
  });
  rfb.addEventListener("disconnect", () => {
    // The socket's close event has fired by now; it carries the gateway's reason.
    setTimeout(() => connectionLost(consoleState.closeCode, consoleState.closeReason), 0);
  });
  rfb.addEventListener("securityfailure", (event) => {
    consoleState.closeReason = event.detail.reason || "The desktop refused the console login.";
  });
}

function connectionLost(code, reason) {
  el("btn-cad").disabled = true;
  rfb = null;
  consoleState.phase = "disconnected";
  const message = reason || (code === 1006 ? "The connection dropped." : "The console was closed.");
  // A dropped network link is retried on its own; a refusal by the gateway is not.
  const transient = code === 1006 || code === 1001 || code === null;
  if (transient && attempts < 3) {
    attempts += 1;
    const wait = 1000 * attempts;
    setStatus(`${message} Reconnecting in ${wait / 1000} s…`);
    setTimeout(openConsole, wait);
    return;
  }
  setStatus(`${message}${code ? ` (code ${code})` : ""}`);
  el("btn-reconnect").hidden = false;
}

function setStatus(text) {
  el("console-status").textContent = text;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

el("btn-cad").addEventListener("click", () => rfb && rfb.sendCtrlAltDel());
el("btn-scale").addEventListener("click", (event) => {
  const on = event.currentTarget.getAttribute("aria-pressed") !== "true";
  event.currentTarget.setAttribute("aria-pressed", String(on));
  if (rfb) rfb.scaleViewport = on;
});
el("btn-fullscreen").addEventListener("click", () => {
  if (document.fullscreenElement) document.exitFullscreen();
  else el("console").requestFullscreen();
});
el("btn-reconnect").addEventListener("click", () => {
  attempts = 0;
  openConsole();
});

followLaunch();
