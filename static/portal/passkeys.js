// Passkeys (WebAuthn) for the second login step and the account page. A button with
// data-passkey="register" or "authenticate" asks the server for options (data-options-url),
// lets the browser talk to the authenticator, puts the answer into the form's hidden
// passkey_response field and submits the form; the server checks everything (py_webauthn).
(function () {
  "use strict";

  function toBuffer(text) {
    let base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    while (base64.length % 4) base64 += "=";
    const binary = atob(base64);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes.buffer;
  }

  function toText(buffer) {
    const bytes = new Uint8Array(buffer);
    let binary = "";
    for (let i = 0; i < bytes.length; i++) binary += String.fromCharCode(bytes[i]);
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  async function optionsFrom(url, form) {
    const token = form.querySelector("input[name=csrfmiddlewaretoken]").value;
    const response = await fetch(url, {method: "POST", credentials: "same-origin", headers: {"X-CSRFToken": token}});
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    return body;
  }

  async function register(form, url) {
    const options = await optionsFrom(url, form);
    options.challenge = toBuffer(options.challenge);
    options.user.id = toBuffer(options.user.id);
    (options.excludeCredentials || []).forEach(function (c) { c.id = toBuffer(c.id); });
    const credential = await navigator.credentials.create({publicKey: options});
    const answer = credential.response;
    return {
      id: credential.id, rawId: toText(credential.rawId), type: credential.type,
      authenticatorAttachment: credential.authenticatorAttachment || undefined,
      clientExtensionResults: credential.getClientExtensionResults(),
      response: {
        clientDataJSON: toText(answer.clientDataJSON),
        attestationObject: toText(answer.attestationObject),
        transports: answer.getTransports ? answer.getTransports() : [],
      },
    };
  }

  async function authenticate(form, url) {
    const options = await optionsFrom(url, form);
    options.challenge = toBuffer(options.challenge);
    (options.allowCredentials || []).forEach(function (c) { c.id = toBuffer(c.id); });
    const credential = await navigator.credentials.get({publicKey: options});
    const answer = credential.response;
    const body = {
      clientDataJSON: toText(answer.clientDataJSON),
      authenticatorData: toText(answer.authenticatorData),
      signature: toText(answer.signature),
    };
    if (answer.userHandle) body.userHandle = toText(answer.userHandle);
    return {
      id: credential.id, rawId: toText(credential.rawId), type: credential.type,
      authenticatorAttachment: credential.authenticatorAttachment || undefined,
      clientExtensionResults: credential.getClientExtensionResults(), response: body,
    };
  }

  document.querySelectorAll("button[data-passkey]").forEach(function (button) {
    button.addEventListener("click", async function (event) {
      event.preventDefault();
      const form = button.form;
      const status = form.querySelector(".passkey-status");
      if (!window.PublicKeyCredential) {
        if (status) status.textContent = "This browser cannot use passkeys here (it needs HTTPS).";
        return;
      }
      button.disabled = true;
      try {
        const ceremony = button.dataset.passkey === "register" ? register : authenticate;
        const answer = await ceremony(form, button.dataset.optionsUrl);
        form.querySelector("input[name=passkey_response]").value = JSON.stringify(answer);
        form.submit();
      } catch (error) {
        if (status) status.textContent = "The passkey did not answer: " + error.message;
        button.disabled = false;
      }
    });
  });
})();
