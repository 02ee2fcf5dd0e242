// The callrelay console: live calls over Socket.IO, the history over the HTTP API, listening
// through an AudioWorklet, placing calls (by the relay or from this browser) and talking back.

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "callrelay.token";
const SPEAKERS = { Caller: "inbound", Receiver: "outbound" };
const PAGE = 50;

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  calls: new Map(), // callSid -> call
  rows: new Map(), // callSid -> <li>
  tab: "live",
  selected: null,
  historyNext: null,
  socket: null,
  audioSocket: null,
  listen: { mode: "off", context: null, node: null, sent: 0, played: 0, underruns: 0 },
  levels: { inbound: 0, outbound: 0 },
};
window.callrelayConsole = state; // what the page is doing, for a look from the devtools

// ---- The API -------------------------------------------------------------------------------

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { Authorization: `Bearer ${state.token}`, ...(options.headers || {}) },
  });
  if (response.status === 401) throw new Unauthorized("That token is not this relay's API token.");
  if (response.status === 204) return null;
  const body = response.headers.get("Content-Type")?.includes("json") ? await response.json() : null;
  if (!response.ok) throw new Error(body?.error || `${response.status} ${response.statusText}`);
  return body;
}

function toast(text) {
  const box = $("toast");
  box.textContent = text;
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (box.hidden = true), 4000);
}

// ---- Formatting ----------------------------------------------------------------------------

const clock = (seconds) => {
  const s = Math.max(0, Math.floor(seconds || 0));
  const h = Math.floor(s / 3600);
  const mm = String(Math.floor((s % 3600) / 60)).padStart(2, "0");
  const ss = String(s % 60).padStart(2, "0");
  return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
};
const callTime = (seconds) => {
  const m = Math.floor(seconds / 60);
  return `${String(m).padStart(2, "0")}:${(seconds - m * 60).toFixed(1).padStart(4, "0")}`;
};
const dateTime = (epoch) =>
  epoch ? new Date(epoch * 1000).toLocaleString([], { dateStyle: "medium", timeStyle: "short" }) : "";
const party = (value) => (value || "unknown").replace(/^client:/, "browser ");
const parties = (call) =>
  call.from || call.to ? `${party(call.from)} → ${party(call.to)}` : `Call ${call.callSid.slice(0, 14)}…`;
const duration = (call) =>
  call.live ? Date.now() / 1000 - (call.startedAt || Date.now() / 1000) : call.seconds || 0;

// ---- Signing in ----------------------------------------------------------------------------

function showSignIn(message = "") {
  $("app").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message;
  $("token").focus();
}

$("signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  state.token = $("token").value.trim();
  try {
    await api("/calls?limit=1");
  } catch (error) {
    $("signin-error").textContent = error instanceof Unauthorized ? error.message : `The relay did not answer: ${error.message}`;
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, state.token);
  $("token").value = "";
  start();
});

function signOut(message = "") {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.socket?.disconnect();
  closeAudio();
  state.calls.clear();
  state.rows.clear();
  $("call-list").replaceChildren();
  showSignIn(message);
}
$("signout").addEventListener("click", () => signOut());

// ---- Live events ---------------------------------------------------------------------------

function start() {
  $("signin").hidden = true;
  $("app").hidden = false;
  const socket = io({ auth: { token: state.token, audio: false }, transports: ["websocket"] });
  state.socket = socket;
  socket.on("connect", () => setLink(true, "live"));
  socket.on("disconnect", () => setLink(false, "reconnecting…"));
  socket.on("connect_error", (error) => {
    if (/unauthori[sz]ed/i.test(error.message)) signOut("That token is not this relay's API token.");
    else setLink(false, "cannot reach the relay");
  });
  socket.on("call_started", onCallStarted);
  socket.on("call_ended", (data) => {
    const call = state.calls.get(data.callSid);
    if (!call) return;
    call.live = false;
    call.status = call.status === "in-progress" ? "ended" : call.status;
    call.seconds = duration({ ...call, live: true });
    note(call, "ended", data.reason);
    refresh(call);
    if (state.selected === call.callSid) {
      closeAudio();
      setTimeout(() => loadFinished(call), 600); // the recordings' last header rewrite
    }
  });
  socket.on("call_completed", (data) => {
    const call = state.calls.get(data.callSid);
    if (call && state.selected === call.callSid) loadFinished(call); // its analytics are in
  });
  socket.on("call_status", (data) => {
    const call = state.calls.get(data.callSid);
    if (!call) return;
    if (["completed", "busy", "failed", "no-answer", "canceled"].includes(data.callStatus)) call.status = data.callStatus;
    note(call, "status", data.callStatus);
    refresh(call);
  });
  socket.on("dtmf", (data) => withCall(data, (call) => note(call, "DTMF", data.digit)));
  for (const [event, paused] of [["call_paused", true], ["call_resumed", false]]) {
    socket.on(event, (data) =>
      withCall(data, (call) => {
        call.paused = paused;
        note(call, paused ? "paused" : "resumed", data.reason === "dtmf" ? "keypad" : "by an operator");
        if (state.selected === call.callSid) showPaused(call);
      }),
    );
  }
  socket.on("played", (data) =>
    withCall(data, (call) => note(call, "played", `${data.name}${data.interrupted ? " (cut off)" : ""}`)),
  );
  socket.on("transcription_ended", (data) => withCall(data, (call) => note(call, "transcribed", "every final is out")));
  socket.on("transcription_lag", (data) =>
    withCall(data, (call) =>
      note(call, "lag", `${data.speaker}'s transcript ${data.lagSeconds.toFixed(1)} s behind` +
        (data.skippedSeconds ? `, ${data.skippedSeconds.toFixed(1)} s skipped` : "")),
    ),
  );
  for (const speaker of Object.keys(SPEAKERS)) {
    socket.on(speaker, (data) => withCall(data, (call) => addFinal(call, { ...data, speaker })));
  }
  socket.on("partial", (data) => withCall(data, (call) => setPartial(call, data)));
  socket.on("error", (data) => toast(data.error || "the relay refused that"));
  loadCalls();
  checkHealth();
  state.ticker ??= setInterval(tick, 1000);
  state.healthTicker ??= setInterval(checkHealth, 10_000);
}

// GET / says whether this relay can place calls (without Twilio settings it cannot) and
// whether its webhook receivers are failing, which an operator must see.
async function checkHealth() {
  const health = await fetch("/").then((r) => r.json()).catch(() => null);
  if (!health) return;
  state.health = health;
  const configured = health.callingConfigured !== false;
  $("open-dial").disabled = !configured;
  $("calling-note").hidden = configured;
  const hooks = health.webhooks;
  const failing = Boolean(hooks?.failing);
  $("webhook-alert").hidden = !failing;
  if (failing) {
    const oldest = hooks.oldestPendingSeconds ? `, the oldest ${clock(hooks.oldestPendingSeconds)} old` : "";
    $("webhook-alert").textContent =
      `Webhooks failing: ${hooks.failing} of ${hooks.receivers} receiver${hooks.receivers === 1 ? "" : "s"} ` +
      `did not take the last delivery; ${hooks.pending} waiting in the outbox${oldest}. ` +
      "They are retried; the relay's log (webhook_retrying, webhook_given_up) says why.";
  }
}

function setLink(up, text) {
  $("link-dot").className = `dot ${up ? "up" : "down"}`;
  $("link-text").textContent = text;
}

function withCall(data, act) {
  const call = state.calls.get(data.callSid);
  if (call) act(call);
}

async function onCallStarted(data) {
  let call = state.calls.get(data.callSid);
  if (!call) {
    call = newCall({ callSid: data.callSid, status: "in-progress", startedAt: Date.now() / 1000 });
    state.calls.set(call.callSid, call);
  }
  Object.assign(call, { live: true, status: "in-progress", tracks: data.tracks });
  call.seenAt ??= performance.now();
  call.talk = Boolean(data.customParameters?.callrelayTalk);
  note(call, data.resumed ? "resumed" : "started", (data.tracks || []).join(" + "));
  refresh(call);
  // With no call open, a call that starts opens itself.
  if (state.selected === null && state.tab === "live") select(call.callSid);
  try {
    const known = await api(`/calls/${data.callSid}`);
    Object.assign(call, { from: known.from, to: known.to, direction: known.direction, startedAt: known.startedAt });
    refresh(call);
  } catch (error) {
    if (error instanceof Unauthorized) signOut(error.message);
  }
}

function newCall(fields) {
  return { transcript: [], partials: {}, timeline: [], live: false, ...fields };
}

function note(call, kind, text) {
  call.timeline.push({ at: Date.now() / 1000, kind, text });
  if (state.selected === call.callSid) renderTimeline(call);
}

// ---- The call list -------------------------------------------------------------------------

async function loadCalls(query = "") {
  const body = await api(`/calls?limit=${PAGE}${query}`).catch((error) => {
    if (error instanceof Unauthorized) signOut(error.message);
    return null;
  });
  if (!body) return;
  for (const summary of body.calls) {
    const call = state.calls.get(summary.callSid) || newCall({});
    Object.assign(call, summary);
    call.seenAt ??= summary.startedAt - 1e12; // live when the page opened: below those seen since
    state.calls.set(call.callSid, call);
  }
  state.historyNext = body.next;
  renderList();
}

function visibleCalls() {
  const byTime = (a, b) => (b.startedAt || 0) - (a.startedAt || 0);
  const calls = [...state.calls.values()];
  // Live calls keep the order they were first seen in, so a row never moves under the pointer.
  if (state.tab === "live") return calls.filter((c) => c.live).sort((a, b) => b.seenAt - a.seenAt);
  const found = state.searchResults;
  return calls.filter((c) => !c.live && (!found || found.has(c.callSid))).sort(byTime);
}

function renderList() {
  const list = $("call-list");
  const calls = visibleCalls();
  list.replaceChildren(...calls.map(row));
  list.hidden = calls.length === 0;
  $("list-empty").hidden = calls.length > 0;
  $("list-empty").innerHTML =
    state.tab === "live"
      ? "No live calls. Simulate one with <code>callrelay simulate call</code>."
      : "No calls found.";
  $("live-count").textContent = [...state.calls.values()].filter((c) => c.live).length;
  $("more").hidden = state.tab !== "history" || !state.historyNext;
}

function row(call) {
  let li = state.rows.get(call.callSid);
  if (!li) {
    li = document.createElement("li");
    li.className = "call-item";
    li.dataset.callSid = call.callSid;
    li.innerHTML = '<span class="parties"></span><span class="when"></span><span class="sub"></span>';
    li.addEventListener("click", () => select(call.callSid));
    state.rows.set(call.callSid, li);
  }
  li.classList.toggle("selected", state.selected === call.callSid);
  li.querySelector(".parties").textContent = parties(call);
  li.querySelector(".when").textContent = call.live ? clock(duration(call)) : dateTime(call.startedAt);
  const sub = li.querySelector(".sub");
  sub.replaceChildren();
  const badge = (text, cls = "") => {
    const b = document.createElement("span");
    b.className = `badge ${cls}`;
    b.textContent = text;
    sub.append(b);
  };
  if (call.live) badge("live", "live");
  if (call.talk) badge("talk", "badge-talk");
  badge(call.direction || "call");
  if (!call.live) badge(clock(call.seconds));
  const sid = document.createElement("span");
  sid.textContent = call.callSid.slice(0, 12) + "…";
  sub.append(sid);
  return li;
}

function refresh(call) {
  if (state.rows.has(call.callSid) || (state.tab === "live") === call.live) renderList();
  if (state.selected === call.callSid) renderHeader(call);
}

function tick() {
  for (const call of state.calls.values()) {
    if (call.live) state.rows.get(call.callSid)?.querySelector(".when")?.replaceChildren(clock(duration(call)));
  }
  const call = state.calls.get(state.selected);
  if (call?.live) renderHeader(call);
}

for (const tab of ["live", "history"]) {
  $(`tab-${tab}`).addEventListener("click", () => {
    state.tab = tab;
    for (const other of ["live", "history"]) {
      $(`tab-${other}`).classList.toggle("active", other === tab);
      $(`tab-${other}`).setAttribute("aria-selected", String(other === tab));
    }
    $("history-search").hidden = tab !== "history";
    renderList();
  });
}

let searchTimer;
$("search-text").addEventListener("input", () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(search, 300);
});

async function search() {
  const text = $("search-text").value.trim();
  if (!text) {
    state.searchResults = null;
    renderList();
    return;
  }
  const isNumber = /^[+\d\s()-]+$/.test(text);
  const query = isNumber ? `number=${encodeURIComponent(text.replace(/[\s()-]/g, ""))}` : `q=${encodeURIComponent(text)}`;
  const body = await api(`/calls?limit=200&${query}`);
  state.searchResults = new Set(body.calls.map((c) => c.callSid));
  for (const summary of body.calls) {
    if (!state.calls.has(summary.callSid)) state.calls.set(summary.callSid, Object.assign(newCall({}), summary));
  }
  renderList();
}

$("more").addEventListener("click", () => loadCalls(`&before=${state.historyNext}`));

// ---- One call ------------------------------------------------------------------------------

async function select(callSid) {
  const call = state.calls.get(callSid);
  if (!call) return;
  closeAudio();
  state.selected = callSid;
  renderList();
  $("detail-empty").hidden = true;
  $("call").hidden = false;
  renderHeader(call);
  renderTimeline(call);
  $("finished").hidden = true;
  $("talk").hidden = !(call.live && call.talk);
  $("meters").hidden = !call.live;
  const oneWay = call.tracks && !call.tracks.includes("outbound");
  $("meter-outbound").closest(".meter").hidden = Boolean(oneWay);
  for (const mode of ["outbound", "both"]) $("listen").querySelector(`[data-listen=${mode}]`).hidden = Boolean(oneWay);
  $("listen-control").hidden = !call.live;
  $("hangup").hidden = !call.live;
  $("pause").hidden = !call.live;
  showPaused(call);
  $("delete").hidden = call.live;
  try {
    const full = await api(`/calls/${callSid}`);
    Object.assign(call, { from: full.from, to: full.to, direction: full.direction });
    call.transcript = mergeTranscript(call.transcript, full.transcript || []);
    call.timeline = (full.events || []).map(describeEvent); // what happened before we looked
    renderTimeline(call);
    if (!call.live) showRecordings(full.recordings || [], full.stereo, full.transcriptUrl);
    showAnalytics(call.live ? null : full);
    renderHeader(call);
  } catch (error) {
    if (error instanceof Unauthorized) return signOut(error.message);
  }
  renderTranscript(call);
  if (call.live) openAudio(call);
}

async function loadFinished(call) {
  if (state.selected === call.callSid) await select(call.callSid);
}

function renderHeader(call) {
  $("call-title").textContent = parties(call);
  const bits = [
    call.live ? "live" : call.status || "ended",
    call.direction,
    call.tracks && (call.tracks.length === 2 ? "both sides" : "caller only"),
    call.live ? clock(duration(call)) : `${clock(call.seconds)} long`,
    dateTime(call.startedAt),
    call.callSid,
  ];
  $("call-meta").textContent = bits.filter(Boolean).join(" · ");
}

function mergeTranscript(have, fetched) {
  const key = (l) => `${l.speaker}|${l.start}`;
  const seen = new Set(have.map(key));
  return [...have, ...fetched.filter((l) => !seen.has(key(l)))].sort((a, b) => a.start - b.start);
}

function addFinal(call, line) {
  call.transcript = mergeTranscript(call.transcript, [line]);
  delete call.partials[line.speaker];
  if (state.selected === call.callSid) renderTranscript(call);
}

function setPartial(call, data) {
  call.partials[data.speaker] = data;
  if (state.selected === call.callSid) renderTranscript(call);
}

function renderTranscript(call) {
  const list = $("transcript");
  const lines = [...call.transcript, ...Object.values(call.partials).map((p) => ({ ...p, partial: true }))];
  if (!lines.length) {
    const none = document.createElement("li");
    none.className = "none";
    none.textContent = call.live ? "Listening for speech…" : "Nothing was transcribed.";
    list.replaceChildren(none);
    return;
  }
  list.replaceChildren(
    ...lines.map((line) => {
      const li = document.createElement("li");
      li.className = `line ${line.speaker === "Caller" ? "caller" : "receiver"}${line.partial ? " partial" : ""}`;
      li.innerHTML = '<div class="bubble"><time></time><span class="text"></span></div>';
      li.querySelector("time").textContent = callTime(line.start || 0);
      li.querySelector(".text").textContent = line.text;
      return li;
    }),
  );
  const detail = $("detail");
  if (call.live) detail.scrollTop = detail.scrollHeight;
}

function describeEvent(event) {
  const text = {
    webhook: () => `Twilio asked for TwiML (${event.direction || "call"})`,
    placed: () => `placed to ${event.to}${event.bridgeTo ? `, bridging ${event.bridgeTo}` : ""}`,
    stream_started: () => (event.tracks || []).join(" + "),
    stream_ended: () => event.reason,
    status: () => event.callStatus,
    transcribed: () => "every final is out",
    paused: () => (event.reason === "dtmf" ? "keypad" : "by an operator"),
    resumed: () => (event.reason === "dtmf" ? "keypad" : "by an operator"),
    completed: () => "recordings, transcript and analytics final",
  }[event.event];
  const kind = { stream_started: "started", stream_ended: "ended" }[event.event] || event.event;
  return { at: event.at, kind, text: text ? text() : "" };
}

function renderTimeline(call) {
  $("timeline").replaceChildren(
    ...call.timeline.map((item) => {
      const li = document.createElement("li");
      li.innerHTML = "<time></time><span class='kind'></span><span class='text'></span>";
      li.querySelector("time").textContent = new Date(item.at * 1000).toLocaleTimeString();
      li.querySelector(".kind").textContent = item.kind;
      li.querySelector(".text").textContent = item.text || "";
      return li;
    }),
  );
}

function showRecordings(recordings, stereo, transcriptUrl) {
  $("finished").hidden = false;
  const card = (recording, who) => {
    const div = document.createElement("div");
    div.className = `recording${recording === stereo ? " stereo" : ""}`;
    div.innerHTML = '<div class="name"><span></span><a download>Download</a></div><audio controls preload="metadata"></audio>';
    div.querySelector("span").textContent = `${who} · ${clock(recording.seconds)}`;
    div.querySelector("audio").src = recording.url;
    div.querySelector("a").href = `${recording.url}&download`;
    return div;
  };
  // Both sides in one stereo file (caller left, receiver right) first, then each on its own
  // (a call kept as FLAC or Opus has only the stereo file).
  const sides = recordings.filter((r) => !stereo || r.name !== stereo.name);
  $("recordings").replaceChildren(
    ...(stereo ? [card(stereo, "Both sides (stereo)")] : []),
    ...sides.map((r) => card(r, r.name.startsWith("caller") ? "Caller" : "Receiver")),
  );
  for (const format of ["txt", "vtt", "srt"]) {
    $(`transcript-${format}`).href = `${transcriptUrl}&format=${format}&download`;
  }
}

// Talk time per side, and who spoke when: a lane per side over the call's length.
function showAnalytics(full) {
  const figures = full?.analytics;
  $("analytics").hidden = !figures;
  if (!figures) return;
  const seconds = Math.max(full.seconds || 0, ...["caller", "receiver"].flatMap((s) => (full.speech?.[s] || []).map((r) => r[1])));
  const share = (side) => (seconds ? Math.round((100 * figures[side].talkSeconds) / seconds) : 0);
  for (const side of ["caller", "receiver"]) {
    const talk = figures[side].talkSeconds;
    $(`talk-${side}`).textContent = `${talk < 60 ? `${talk.toFixed(1)} s` : clock(talk)} (${share(side)}%)`;
  }
  $("talk-call").textContent = [
    `silence ${clock(figures.silenceSeconds)}`,
    `overlap ${figures.overlapSeconds.toFixed(1)} s`,
    `${figures.interruptions} interruption${figures.interruptions === 1 ? "" : "s"}`,
    figures.firstResponseSeconds === null ? "" : `first response after ${figures.firstResponseSeconds.toFixed(1)} s`,
  ].filter(Boolean).join(" · ");
  const svg = $("speech-picture");
  const rect = (cls, x, y, width, title) => {
    const r = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    for (const [name, value] of Object.entries({ class: cls, x, y, width, height: 20 })) r.setAttribute(name, value);
    if (title) r.append(Object.assign(document.createElementNS("http://www.w3.org/2000/svg", "title"), { textContent: title }));
    return r;
  };
  const lanes = [["caller", 6], ["receiver", 30]];
  svg.replaceChildren(
    ...lanes.map(([, y]) => rect("lane", 0, y, 1000)),
    ...lanes.flatMap(([side, y]) =>
      (full.speech?.[side] || []).map(([start, end]) =>
        rect(side, (1000 * start) / (seconds || 1), y, Math.max(1, (1000 * (end - start)) / (seconds || 1)),
          `${side} ${callTime(start)}–${callTime(end)}`),
      ),
    ),
  );
  svg.setAttribute("aria-label", `Caller talks ${share("caller")}% of the call, the receiver ${share("receiver")}%`);
}

// Pausing (PCI): the recordings get silence, nothing is transcribed, nobody hears it.
function showPaused(call) {
  const button = $("pause");
  button.textContent = call.paused ? "Resume" : "Pause";
  button.setAttribute("aria-pressed", String(Boolean(call.paused)));
  button.classList.toggle("active", Boolean(call.paused));
}

$("pause").addEventListener("click", async () => {
  const call = state.calls.get(state.selected);
  if (!call) return;
  const action = call.paused ? "resume" : "pause";
  try {
    await api(`/calls/${call.callSid}/${action}`, { method: "POST" });
  } catch (error) {
    toast(`Could not ${action}: ${error.message}`);
  }
});

$("hangup").addEventListener("click", async () => {
  try {
    await api(`/calls/${state.selected}/hangup`, { method: "POST" });
    toast("Hanging up…");
  } catch (error) {
    toast(`Could not hang up: ${error.message}`);
  }
});

$("delete").addEventListener("click", async () => {
  const callSid = state.selected;
  if (!confirm("Delete this call's recordings and transcript? This cannot be undone.")) return;
  try {
    await api(`/calls/${callSid}`, { method: "DELETE" });
  } catch (error) {
    return toast(`Could not delete: ${error.message}`);
  }
  state.calls.delete(callSid);
  state.rows.delete(callSid);
  state.selected = null;
  $("call").hidden = true;
  $("detail-empty").hidden = false;
  renderList();
  toast("Deleted.");
});

// ---- Hearing a live call -------------------------------------------------------------------

function openAudio(call) {
  const socket = io({
    auth: { token: state.token, callSid: call.callSid, audioBatchMs: 100 },
    // In the URL too, where several server processes route the socket to the call's own.
    query: { callSid: call.callSid },
    transports: ["websocket"],
    forceNew: true,
  });
  state.audioSocket = socket;
  for (const [event, track] of [["media_in", "inbound"], ["media_out", "outbound"]]) {
    socket.on(event, (data) => {
      const pcm = decodePcm(data.audio);
      state.levels[track] = level(pcm);
      $(`meter-${track}`).style.width = `${Math.round(state.levels[track] * 100)}%`;
      if (state.listen.node) {
        state.listen.sent += pcm.length; // before the buffer is handed over
        state.listen.node.port.postMessage({ track, samples: pcm }, [pcm.buffer]);
      }
    });
  }
}

function closeAudio() {
  state.audioSocket?.disconnect();
  state.audioSocket = null;
  setListen("off");
  for (const track of ["inbound", "outbound"]) $(`meter-${track}`).style.width = "0";
}

function decodePcm(base64) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  const ints = new Int16Array(bytes.buffer, 0, bytes.length >> 1);
  const floats = new Float32Array(ints.length);
  for (let i = 0; i < ints.length; i++) floats[i] = ints[i] / 32768;
  return floats;
}

function level(samples) {
  let sum = 0;
  for (let i = 0; i < samples.length; i++) sum += samples[i] * samples[i];
  const dbfs = 10 * Math.log10(sum / Math.max(1, samples.length) + 1e-10);
  return Math.min(1, Math.max(0, (dbfs + 60) / 60)); // -60 dBFS empty, 0 dBFS full
}

async function setListen(mode) {
  state.listen.mode = mode;
  for (const button of $("listen").querySelectorAll("button")) {
    button.classList.toggle("active", button.dataset.listen === mode);
  }
  if (mode === "off") {
    state.listen.node?.disconnect();
    await state.listen.context?.close();
    Object.assign(state.listen, { context: null, node: null });
    return;
  }
  if (!state.listen.context) {
    const context = new AudioContext({ sampleRate: 16000 });
    await context.audioWorklet.addModule("/console/static/listen-worklet.js");
    const node = new AudioWorkletNode(context, "callrelay-listen", { outputChannelCount: [2] });
    node.port.onmessage = ({ data }) => Object.assign(state.listen, data);
    node.connect(context.destination);
    await context.resume();
    Object.assign(state.listen, { context, node });
  }
  state.listen.node.port.postMessage({
    playing: { inbound: mode !== "outbound", outbound: mode !== "inbound" },
  });
}

for (const button of $("listen").querySelectorAll("button")) {
  button.addEventListener("click", () => setListen(button.dataset.listen));
}

// ---- Talking into a call -------------------------------------------------------------------

function play(message) {
  state.socket.emit("play", { callSid: state.selected, ...message }, (ack) => {
    $("talk-note").textContent = ack.ok
      ? `Playing “${ack.name}” (${ack.seconds.toFixed(1)} s${ack.aheadSeconds ? `, after ${ack.aheadSeconds.toFixed(1)} s queued` : ""}).`
      : ack.error;
  });
}

$("say-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("say-text").value.trim();
  if (!text) return;
  play({ text, name: text.slice(0, 60) });
  $("say-text").value = "";
});

$("wav").addEventListener("change", async () => {
  const file = $("wav").files[0];
  if (!file) return;
  const bytes = new Uint8Array(await file.arrayBuffer());
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  play({ wav: btoa(binary), name: file.name });
  $("wav").value = "";
});

$("stop-talk").addEventListener("click", () => {
  state.socket.emit("clear", { callSid: state.selected }, (ack) => {
    $("talk-note").textContent = ack.ok ? "Stopped." : ack.error;
  });
});

// ---- Placing calls -------------------------------------------------------------------------

$("open-dial").addEventListener("click", () => {
  $("dial-error").textContent = "";
  $("dial").showModal();
});

$("dial-form").addEventListener("submit", async (event) => {
  if (event.submitter?.value !== "place") return;
  event.preventDefault();
  const body = { to: $("dial-to").value.trim(), mode: new FormData($("dial-form")).get("mode") };
  const bridge = $("dial-bridge").value.trim();
  if (bridge) body.bridgeTo = bridge;
  try {
    const placed = await api("/make-call", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    $("dial").close();
    toast(`Calling ${body.to}… (${placed.callSid})`);
  } catch (error) {
    $("dial-error").textContent = error.message;
  }
});

$("dial-browser").addEventListener("click", async () => {
  const to = $("dial-to").value.trim();
  if (!$("dial-to").checkValidity()) return ($("dial-error").textContent = "Enter a number such as +14155550100.");
  try {
    const { token } = await api("/token?identity=console");
    await loadScript("/console/static/vendor/twilio.min.js");
    const device = new Twilio.Device(token, { logLevel: "warn" });
    const failed = (error) => {
      state.browserCall = { to, state: "failed", error: error.message || String(error) };
      toast(`The browser call failed: ${state.browserCall.error}`);
      device.destroy(); // no retrying in the background
    };
    device.on("error", failed);
    state.browserCall = { to, state: "connecting" };
    const call = await device.connect({ params: { To: to } });
    call.on("accept", () => (state.browserCall.state = "in-progress"));
    call.on("disconnect", () => {
      state.browserCall.state = "ended";
      toast("The browser call ended.");
    });
    call.on("error", failed);
    $("dial").close();
    toast(`Calling ${to} from this browser…`);
  } catch (error) {
    state.browserCall = { to, state: "failed", error: error.message };
    $("dial-error").textContent = error.message;
  }
});

function loadScript(src) {
  return new Promise((resolve, reject) => {
    if (document.querySelector(`script[src="${src}"]`)) return resolve();
    const script = Object.assign(document.createElement("script"), { src, onload: resolve, onerror: reject });
    document.head.append(script);
  });
}

// ---- Start ---------------------------------------------------------------------------------

if (state.token) start();
else showSignIn();
