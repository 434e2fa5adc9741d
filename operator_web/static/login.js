// Login: JSON to /api/login, then to the fleet.
"use strict";
document.getElementById("login").addEventListener("submit", async ev => {
  ev.preventDefault();
  const msg = document.getElementById("msg");
  msg.textContent = "Checking…";
  const r = await fetch("/api/login", {
    method: "POST", credentials: "same-origin",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ user: document.getElementById("user").value, password: document.getElementById("password").value }),
  });
  const data = await r.json().catch(() => ({ ok: false, message: `HTTP ${r.status}` }));
  if (data.ok) { location.href = "/"; return; }
  msg.textContent = data.message || "login failed";
  msg.style.color = "#b3261e";
});
