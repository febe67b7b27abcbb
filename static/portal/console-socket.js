// The console's websocket: a WebSocket that also measures its round-trip time and keeps the
// gateway's close code and reason. Text frames are the gateway's control channel ("vdi-ping" /
// "vdi-pong", and "vdi-notice {json}": a message for the user, dispatched on `window` as a
// "vdi-notice" event); the console protocols (RFB, SPICE) are binary only, so noVNC and spice-html5
// never see a text frame: this class hides them from their listeners.
const NativeWebSocket = window.WebSocket;
const PING_EVERY_MS = 2000;

export class ConsoleSocket extends NativeWebSocket {
  constructor(url, protocols) {
    super(url, protocols);
    this.binaryType = "arraybuffer";
    this.rttMs = null;
    this.closeCode = null;
    this.closeReason = "";
    super.addEventListener("message", (event) => {
      if (typeof event.data === "string" && event.data.startsWith("vdi-pong ")) {
        this.rttMs = performance.now() - Number(event.data.slice(9));
        if (this.onrtt) this.onrtt(this.rttMs);
      } else if (typeof event.data === "string" && event.data.startsWith("vdi-notice ")) {
        let notice;
        try {
          notice = JSON.parse(event.data.slice(11));
        } catch (error) {
          return;
        }
        window.dispatchEvent(new CustomEvent("vdi-notice", { detail: notice }));
      }
    });
    super.addEventListener("close", (event) => {
      this.closeCode = event.code;
      this.closeReason = event.reason;
      clearInterval(this.pinger);
    });
    super.addEventListener("open", () => {
      this.ping();
      this.pinger = setInterval(() => this.ping(), PING_EVERY_MS);
    });
  }

  ping() {
    if (this.readyState === NativeWebSocket.OPEN) super.send(`vdi-ping ${performance.now()}`);
  }

  addEventListener(type, listener, options) {
    if (type === "message") {
      const inner = listener;
      listener = function (event) {
        if (typeof event.data !== "string") return inner.call(this, event);
      };
    }
    return super.addEventListener(type, listener, options);
  }

  set onmessage(listener) {
    super.onmessage = listener
      ? function (event) {
          if (typeof event.data !== "string") return listener.call(this, event);
        }
      : null;
  }

  get onmessage() {
    return super.onmessage;
  }

  // noVNC accepts a "raw channel" only if these are named on the object or its prototype.
  send(data) { return super.send(data); }
  close(code, reason) { return super.close(code, reason); }
  get binaryType() { return super.binaryType; }
  set binaryType(value) { super.binaryType = value; }
  get onerror() { return super.onerror; }
  set onerror(listener) { super.onerror = listener; }
  get onopen() { return super.onopen; }
  set onopen(listener) { super.onopen = listener; }
  get protocol() { return super.protocol; }
  get readyState() { return super.readyState; }
}

// US keyboard: the key (KeyboardEvent.code, and the legacy keyCode SPICE wants) and whether
// Shift is held, for each printable character. Used to paste text as keystrokes, which works
// in any guest (a clipboard agent is not needed).
const SHIFTED_PAIRS = { "!": "1", "@": "2", "#": "3", $: "4", "%": "5", "^": "6", "&": "7", "*": "8", "(": "9",
  ")": "0", _: "-", "+": "=", "{": "[", "}": "]", "|": "\\", ":": ";", '"': "'", "<": ",", ">": ".", "?": "/",
  "~": "`" };
const PUNCTUATION = { "-": ["Minus", 189], "=": ["Equal", 187], "[": ["BracketLeft", 219],
  "]": ["BracketRight", 221], "\\": ["Backslash", 220], ";": ["Semicolon", 186], "'": ["Quote", 222],
  ",": ["Comma", 188], ".": ["Period", 190], "/": ["Slash", 191], "`": ["Backquote", 192],
  " ": ["Space", 32], "\n": ["Enter", 13], "\t": ["Tab", 9] };

export function keyFor(char) {
  let shift = false;
  let base = char;
  if (SHIFTED_PAIRS[char]) {
    shift = true;
    base = SHIFTED_PAIRS[char];
  } else if (char >= "A" && char <= "Z") {
    shift = true;
    base = char.toLowerCase();
  }
  if (base >= "a" && base <= "z") return { code: `Key${base.toUpperCase()}`, keyCode: base.toUpperCase().charCodeAt(0), shift };
  if (base >= "0" && base <= "9") return { code: `Digit${base}`, keyCode: base.charCodeAt(0), shift };
  if (PUNCTUATION[base]) return { code: PUNCTUATION[base][0], keyCode: PUNCTUATION[base][1], shift };
  return null; // not on a US keyboard: skipped
}
