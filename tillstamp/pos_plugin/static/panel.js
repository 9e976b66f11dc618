// The cashier panel: refresh the live part after each server-sent event; actions call the API.
(function () {
  "use strict";
  const live = document.getElementById("live");
  const conn = document.getElementById("conn");
  const lang = document.body.dataset.lang;
  let timer = null;

  function refresh() {
    // Events come in bursts (a sale, then its device and print events): redraw once.
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const r = await fetch("/panel/live?lang=" + lang, { credentials: "same-origin" });
      if (r.ok) { live.innerHTML = await r.text(); }
    }, 80);
  }

  function say(id, text, ok) {
    const el = document.getElementById(id);
    if (el) { el.textContent = text; el.className = "msg " + (ok ? "ok" : "bad"); }
  }

  async function post(url, body) {
    const r = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    const data = await r.json().catch(() => ({}));
    if (!r.ok) { throw new Error(data.message || r.statusText); }
    return data;
  }

  function connect() {
    const es = new EventSource("/v1/events");
    es.onopen = () => { conn.className = "pill on"; };
    es.onerror = () => { conn.className = "pill off"; };  // EventSource reconnects by itself
    es.onmessage = (msg) => {
      const ev = JSON.parse(msg.data);
      document.body.dataset.lastEvent = ev.type;
      refresh();
    };
  }

  live.addEventListener("click", async (e) => {
    const b = e.target.closest("button");
    if (!b) { return; }
    b.disabled = true;
    try {
      if (b.classList.contains("redeem")) {
        await post("/v1/redemptions", { member: b.dataset.member, reward: b.dataset.reward });
        say("action-msg", WORDS.redeemed, true);
      } else if (b.classList.contains("claim-btn")) {
        await post("/v1/claims", { member: b.dataset.member, payload: b.dataset.payload });
      }
    } catch (err) {
      say("action-msg", WORDS.error + ": " + err.message, false);
      b.disabled = false;
    }
  });

  document.getElementById("enrol").addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = e.target;
    const body = { phone: f.phone.value.trim(), consent: [] };
    if (f.name.value.trim()) { body.name = f.name.value.trim(); }
    f.querySelectorAll("input[name=consent]:checked").forEach((c) => body.consent.push(c.value));
    try {
      const m = await post("/v1/members", body);
      say("enrol-msg", WORDS.enrolled + ": " + (m.name || m.member), true);
      f.reset();
    } catch (err) {
      say("enrol-msg", WORDS.error + ": " + err.message, false);
    }
  });

  connect();
})();
