"use strict";
// The status page: the server renders the body (tables, SVG pictures); this refreshes it every
// few seconds and sends the cancel button's request.
const REFRESH_MS = 3000;
let refreshes = 0;

function say(text, kind) {
  const message = document.getElementById("message");
  message.textContent = text || "";
  message.className = kind || "";
}

async function refresh() {
  try {
    const data = await sieveApi("GET", "/api/status/html");
    document.getElementById("status-body").innerHTML = data.html;  // escaped by the server
    refreshes += 1;
    document.body.dataset.refreshes = String(refreshes);
    document.getElementById("refreshed").textContent = new Date().toLocaleTimeString();
    document.body.dataset.state = "ready";
  } catch (error) {
    say(error.message + (error.sqlstate ? " (" + error.sqlstate + ")" : ""), "error");
    document.body.dataset.state = error.status === 401 || error.status === 403 ? "denied" : "ready";
  }
}

async function cancel(button) {
  button.disabled = true;
  try {
    await sieveApi("POST", "/api/status/cancel", { id: Number(button.dataset.id) });
    say("cancel sent to statement " + button.dataset.id, "ok");
  } catch (error) {
    say(error.message + (error.sqlstate ? " (" + error.sqlstate + ")" : ""), "error");
  }
  await refresh();
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("status-body").addEventListener("click", (event) => {
    const button = event.target.closest("button.cancel");
    if (button) cancel(button);
  });
  refresh();
  setInterval(() => { if (document.getElementById("auto").checked) refresh(); }, REFRESH_MS);
});
