// The cashier panel: refresh the live part after each server-sent event; actions call /panel/*,
// which answers in the panel's language. The scan/search input keeps the focus, so a keyboard-
// wedge scanner can type a member QR into it at any time.
(function () {
  "use strict";
  const live = document.getElementById("live");
  const conn = document.getElementById("conn");
  const stale = document.getElementById("stale");
  const lang = document.body.dataset.lang;
  const find = document.getElementById("find");
  const findInput = document.getElementById("find-q");
  const result = document.getElementById("result");
  const enrolDialog = document.getElementById("enrol-dialog");
  const confirmDialog = document.getElementById("confirm");
  let timer = null;
  let clearTimer = null;
  let connected = false;

  function setConnected(on) {
    connected = on;
    conn.className = "pill " + (on ? "on" : "off");
    conn.textContent = "● " + (on ? WORDS.live : WORDS.disconnected);
    stale.hidden = on;
    document.body.classList.toggle("agent-down", !on);
    if (!on) {
      // What the page last heard is not the state now: no device may read "ready".
      live.querySelectorAll(".pill.dev").forEach((p) => {
        p.textContent = WORDS.unknown; p.className = "pill dev none";
      });
    }
  }

  function focusFind() {
    if (!enrolDialog.open && !confirmDialog.open && document.activeElement !== findInput) {
      findInput.focus({ preventScroll: true });
    }
  }

  function armClear() {
    // The server forgets an idle member after a while; redraw then, no event will say so.
    clearTimeout(clearTimer);
    const box = document.getElementById("member");
    const secs = box ? Number(box.dataset.clearsIn || 0) : 0;
    if (secs > 0) { clearTimer = setTimeout(refresh, secs * 1000 + 300); }
  }

  function refresh() {
    // Events come in bursts (a sale, then its device and print events): redraw once.
    clearTimeout(timer);
    timer = setTimeout(async () => {
      try {
        const r = await fetch("/panel/live?lang=" + lang, { credentials: "same-origin" });
        if (r.ok) {
          live.innerHTML = await r.text();
          if (!connected) { setConnected(false); }
          armClear();
          focusFind();
        }
      } catch (err) {
        setConnected(false);
      }
    }, 80);
  }

  function show(message, ok, extra) {
    // Kept on screen until the cashier closes it: the live part redraws, this does not.
    document.getElementById("result-text").textContent = message;
    const box = document.getElementById("result-extra");
    box.replaceChildren();
    if (extra) { box.appendChild(extra); }
    result.className = "result " + (ok ? "ok" : "bad");
    result.hidden = false;
  }

  async function post(url, body) {
    let r;
    try {
      r = await fetch(url, {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json" }, body: JSON.stringify(body || {}),
      });
    } catch (err) {
      setConnected(false);
      throw new Error(WORDS.disconnected);
    }
    const data = await r.json().catch(() => ({}));
    if (!r.ok || !data.ok) { throw new Error(data.message || WORDS.other); }
    return data;
  }

  function ask(text, yes) {
    return new Promise((resolve) => {
      document.getElementById("confirm-text").textContent = text;
      const ok = document.getElementById("confirm-yes");
      const no = document.getElementById("confirm-no");
      ok.textContent = yes;
      const done = (answer) => {
        ok.onclick = no.onclick = null;
        confirmDialog.close();
        resolve(answer);
        focusFind();
      };
      ok.onclick = () => done(true);
      no.onclick = () => done(false);
      confirmDialog.oncancel = () => done(false);
      confirmDialog.showModal();
      no.focus();
    });
  }

  function connect() {
    const es = new EventSource("/v1/events");
    es.onopen = () => { setConnected(true); refresh(); };
    es.onerror = () => { setConnected(false); };  // EventSource reconnects by itself
    es.onmessage = (msg) => {
      const ev = JSON.parse(msg.data);
      document.body.dataset.lastEvent = ev.type;
      refresh();
    };
  }

  find.addEventListener("submit", async (e) => {
    e.preventDefault();
    const q = findInput.value;
    findInput.value = "";
    try {
      const out = await post("/panel/identify", { q: q });
      show(out.message, true);
      refresh();
    } catch (err) {
      show(err.message, false);
    }
    focusFind();
  });

  document.getElementById("result-close").addEventListener("click", () => {
    result.hidden = true;
    focusFind();
  });

  live.addEventListener("click", async (e) => {
    const b = e.target.closest("button");
    if (!b) { return; }
    const d = b.dataset;
    try {
      let out = null;
      if (b.classList.contains("redeem")) {
        if (!(await ask(d.confirm, WORDS.yes_redeem))) { return; }
        b.disabled = true;
        out = await post("/panel/redeem", { member: d.member, reward: d.reward });
      } else if (b.classList.contains("refund")) {
        if (!(await ask(d.confirm, WORDS.yes_refund))) { return; }
        b.disabled = true;
        out = await post("/panel/refund", { receipt: d.receipt });
      } else if (b.classList.contains("reprint")) {
        out = await post("/panel/reprint", { receipt: d.receipt });
      } else if (b.classList.contains("claim-btn")) {
        out = await post("/panel/claim", { member: d.member, payload: d.payload });
      } else if (b.classList.contains("clear")) {
        out = await post("/panel/clear", {});
      } else {
        return;
      }
      show(out.message, true);
    } catch (err) {
      show(err.message, false);
      b.disabled = false;
    }
    refresh();
  });

  document.getElementById("enrol-open").addEventListener("click", () => {
    document.getElementById("enrol-msg").textContent = "";
    enrolDialog.showModal();
    enrolDialog.querySelector("input[name=phone]").focus();
  });
  document.getElementById("enrol-cancel").addEventListener("click", () => {
    enrolDialog.close();
    focusFind();
  });

  function cardView(member, printable) {
    const wrap = document.createElement("div");
    wrap.className = "card-view";
    const img = document.createElement("img");
    img.src = "/panel/card/" + encodeURIComponent(member) + ".png";
    img.alt = member;
    img.id = "card-img";
    wrap.appendChild(img);
    if (printable) {
      const btn = document.createElement("button");
      btn.type = "button";
      btn.id = "print-card";
      btn.textContent = WORDS.print_card;
      btn.addEventListener("click", async () => {
        btn.disabled = true;
        try {
          const out = await post("/panel/print-card", { member: member });
          show(out.message, true, cardView(member, false));
        } catch (err) {
          show(err.message, false, cardView(member, true));
        }
      });
      wrap.appendChild(btn);
    }
    return wrap;
  }

  document.getElementById("enrol").addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = e.target;
    const body = { phone: f.phone.value.trim(), consent: [] };
    if (f.name.value.trim()) { body.name = f.name.value.trim(); }
    f.querySelectorAll("input[name=consent]:checked").forEach((c) => body.consent.push(c.value));
    try {
      const m = await post("/panel/enrol", body);
      f.reset();
      enrolDialog.close();
      show(m.message, true, m.card ? cardView(m.member, true) : null);
      refresh();
    } catch (err) {
      const msg = document.getElementById("enrol-msg");
      msg.textContent = err.message;
      msg.className = "msg bad";
    }
  });

  document.addEventListener("keydown", (e) => {
    // A wedge scanner types wherever the focus is: bring stray keystrokes back to the input.
    if (e.key.length === 1 && !e.ctrlKey && !e.metaKey && !e.altKey) {
      const t = e.target;
      if (!(t instanceof HTMLInputElement) && !(t instanceof HTMLTextAreaElement)) { focusFind(); }
    }
  });

  setConnected(false);
  armClear();
  connect();
})();
