// The edge-run chat page: plain JS, no build step. It talks to /v1 with a bearer key like any
// other client. The key never goes into a URL: a one-time #login=<code> fragment is removed from
// the address bar before anything else runs, then traded for a key at POST /auth/exchange.
"use strict";

const KEY_NAME = "edge-run:key";
const HEALTH_EVERY_MS = 2000;
const $ = (id) => document.getElementById(id);

const state = {
  key: null,          // the API key, or null when this server runs without auth
  models: [],         // model ids, in the server's order
  loads: {},          // model id -> {state: "loaded" | "loading" | "unloaded" | "failed", error}, kept by /health
  inputs: {},         // model id -> what its prompts may hold: ["text", "image", "audio"] (empty: an upstream's)
  history: [],        // the conversation sent with each request: [{role, content}], attachments kept in it
  attachments: [],    // the files for the next message: [{kind: "image" | "audio", name, part}], in order
  abort: null,        // AbortController of the answer being streamed
  revealed: false,
  tab: "curl",
  usageAsked: 0,      // counts /v1/usage requests, so a slow answer for an old period is dropped
  library: [],        // GET /v1/library rows
  pulls: {},          // library id -> {completed, total, file, abort}: the downloads this page follows
};

// ---- key storage ---------------------------------------------------------------------------

function loadKey() {
  return sessionStorage.getItem(KEY_NAME) || localStorage.getItem(KEY_NAME);
}

function saveKey(key, remember) {
  forgetKey();
  if (key) (remember ? localStorage : sessionStorage).setItem(KEY_NAME, key);
  state.key = key;
}

function forgetKey() {
  sessionStorage.removeItem(KEY_NAME);
  localStorage.removeItem(KEY_NAME);
  state.key = null;
}

/** Reads the one-time code from the fragment and removes it from the address bar and history. */
function takeLoginCode() {
  const match = location.hash.match(/(?:^#|&)login=([^&]+)/);
  if (location.hash) history.replaceState(null, "", location.pathname + location.search);
  return match ? decodeURIComponent(match[1]) : null;
}

// ---- HTTP ----------------------------------------------------------------------------------

function authHeaders() {
  return state.key ? { Authorization: `Bearer ${state.key}` } : {};
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) return body.error.message;
  } catch (_) { /* not JSON */ }
  return `HTTP ${response.status}`;
}

async function exchange(code) {
  const r = await fetch("/auth/exchange", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ code }),
  });
  if (!r.ok) throw new Error(await errorMessage(r));
  const body = await r.json();
  saveKey(body.api_key, true);
}

/** Loads /v1/models; false when the key is missing or wrong. */
async function loadModels() {
  const r = await fetch("/v1/models", { headers: authHeaders() });
  if (r.status === 401) return false;
  if (!r.ok) throw new Error(await errorMessage(r));
  const models = (await r.json()).data;
  state.models = models.map((m) => m.id);
  for (const m of models) {
    state.loads[m.id] = { state: m.status, error: m.error };
    state.inputs[m.id] = m.inputs || [];
  }
  // the chat picker offers the models that chat (an upstream lists no capabilities); details, every model
  const chat = models.filter((m) => !m.capabilities?.length || m.capabilities.includes("chat")).map((m) => m.id);
  for (const [select, ids] of [[$("model"), chat], [$("details-model"), state.models]]) {
    const keep = select.value;
    const firstLoaded = ids.find((id) => state.loads[id].state === "loaded");
    select.replaceChildren(...ids.map((id) => new Option(id, id)));
    if (ids.includes(keep)) select.value = keep;
    else if (firstLoaded) select.value = firstLoaded;
  }
  labelModels();
  allowAttachments();
  return true;
}

// ---- model picker --------------------------------------------------------------------------

const STATUS_TEXT = { loaded: "loaded", loading: "loading…", unloaded: "not loaded", failed: "failed" };

/** Writes each model's state into the picker's labels; the selection is untouched. */
function labelModels() {
  for (const option of $("model").options) {
    const load = state.loads[option.value];
    option.textContent = load ? `${option.value} — ${STATUS_TEXT[load.state] || load.state}` : option.value;
    option.title = load?.error || "";
  }
}

// ---- status strip --------------------------------------------------------------------------

async function refreshHealth() {
  try {
    const r = await fetch("/health", { cache: "no-store" });
    const body = await r.json();
    const all = body.models || [];
    const loaded = all.filter((m) => m.state === "loaded");
    const pill = $("status-state");
    pill.textContent = body.status === "ok" ? "ready" : body.status;
    pill.className = `pill ${body.status}`;
    $("status-model").textContent = loaded.map((m) => m.id).join(", ") || "none loaded";
    $("status-backend").textContent = loaded
      .map((m) => (m.backend || "?").toUpperCase() + (m.gpu_layers ? ` (${m.gpu_layers} layers offloaded)` : ""))
      .join(", ") || "–";
    const busy = loaded.reduce((n, m) => n + (m.slots_busy || 0), 0);
    const total = loaded.reduce((n, m) => n + (m.slots_total || 0), 0);
    $("status-slots").textContent = `${busy} busy / ${total - busy} idle`;
    $("status-queued").textContent = String(all.reduce((n, m) => n + (m.queued || 0), 0));
    for (const m of all) state.loads[m.id] = { state: m.state, error: m.error };
    labelModels();
  } catch (_) {
    $("status-state").textContent = "offline";
    $("status-state").className = "pill error";
  }
}

// ---- screens -------------------------------------------------------------------------------

function showLogin(message) {
  $("app").hidden = true;
  $("library").hidden = true;
  $("view-chat").disabled = true;
  $("view-library").disabled = true;
  $("logout").hidden = true;
  $("details-open").disabled = true;
  $("usage-open").disabled = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("login-key").focus();
}

function showApp() {
  $("login").hidden = true;
  showView("chat");
  $("view-chat").disabled = false;
  $("view-library").disabled = false;
  $("logout").hidden = !state.key;
  $("details-open").disabled = false;
  $("usage-open").disabled = false;
}

/** Shows the chat or the library. */
function showView(view) {
  $("app").hidden = view !== "chat";
  $("library").hidden = view !== "library";
  $("view-chat").setAttribute("aria-pressed", String(view === "chat"));
  $("view-library").setAttribute("aria-pressed", String(view === "library"));
  if (view === "chat") $("prompt").focus();
  else loadLibrary();
}

async function enter() {
  if (await loadModels()) showApp();
  else showLogin(state.key ? "That API key was not accepted (revoked?). Paste another one." : "");
}

// ---- chat ----------------------------------------------------------------------------------

/** A message bubble: its text, then the thumbnails and audio chips of its attachments. */
function addMessage(role, text, attachments = []) {
  const el = document.createElement("div");
  el.className = `msg ${role}`;
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  el.append(body);
  if (attachments.length) {
    const media = document.createElement("div");
    media.className = "media";
    media.append(...attachments.map(mediaItem));
    el.append(media);
  }
  $("messages").append(el);
  el.scrollIntoView({ block: "end" });
  return el;
}

/** Yields the JSON payload of each server-sent event until `data: [DONE]`. */
async function* sseEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    const events = buffer.split(/\r?\n\r?\n/);
    buffer = events.pop();
    for (const event of events) {
      const data = event.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      yield JSON.parse(data);
    }
  }
}

function stats(tokens, started, firstAt, endedAt) {
  const genSeconds = firstAt && tokens > 1 ? (endedAt - firstAt) / 1000 : (endedAt - started) / 1000;
  const perToken = firstAt && tokens > 1 ? tokens - 1 : tokens; // the first token's time is in TTFT
  const rate = genSeconds > 0 ? perToken / genSeconds : 0;
  const ttft = firstAt ? `, first token ${Math.round(firstAt - started)} ms` : "";
  return `${tokens} tokens · ${rate.toFixed(1)} tokens/s${ttft}`;
}

/** The thought above an answer: a <details> shown only once reasoning arrives, open while it streams. */
function addThought(bubble) {
  const box = document.createElement("details");
  box.className = "thinking";
  box.hidden = true;
  const summary = document.createElement("summary");
  summary.textContent = "Thinking…";
  const text = document.createElement("div");
  text.className = "thought";
  box.append(summary, text);
  bubble.prepend(box);
  return box;
}

/** A tool call's arguments: pretty JSON once they parse, the raw text until then (or if they never do). */
function prettyArgs(raw) {
  try {
    return JSON.stringify(JSON.parse(raw), null, 2);
  } catch (_) {
    return raw;
  }
}

/** A card under the message for the tool call at `index`, made on its first fragment. */
function toolCard(bubble, cards, index) {
  if (cards[index]) return cards[index];
  let list = bubble.querySelector(".tools");
  if (!list) {
    list = document.createElement("div");
    list.className = "tools";
    bubble.append(list);
  }
  const card = document.createElement("div");
  card.className = "tool-call";
  const name = document.createElement("b");
  name.className = "tool-name";
  const args = document.createElement("pre");
  args.className = "tool-args";
  card.append(name, args);
  list.append(card);
  return (cards[index] = { name: "", args: "", nameEl: name, argsEl: args });
}

async function send(text, attachments) {
  $("chat-error").textContent = "";
  const model = $("model").value;
  const system = $("system").value.trim();
  // With attachments the content is OpenAI's parts: the text (if any), then each file in the order attached.
  // They stay in the history, so later turns send them again (the server has them cached).
  const content = attachments.length
    ? [...(text ? [{ type: "text", text }] : []), ...attachments.map((a) => a.part)]
    : text;
  state.history.push({ role: "user", content });
  addMessage("user", text, attachments);
  const bubble = addMessage("assistant", "");
  bubble.classList.add("pending");
  const out = bubble.querySelector(".text");
  const thought = addThought(bubble);
  if (state.loads[model]?.state !== "loaded") {  // the server loads it before answering: seconds, not a hang
    bubble.classList.add("loading");
    bubble.dataset.loadedModel = model;
    out.textContent = `Loading ${model}…`;
  }
  // Only the answers go back in the history: earlier thoughts and tool calls are not sent again.
  const body = {
    model,
    messages: system ? [{ role: "system", content: system }, ...state.history] : state.history,
    temperature: Number($("temperature").value),
    max_tokens: Number($("max-tokens").value) || undefined,
    stream: true,
    stream_options: { include_usage: true },
  };
  state.abort = new AbortController();
  $("send").hidden = true;
  $("stop").hidden = false;
  const started = performance.now();
  setTimeout(refreshHealth, 100);  // show this request taking its slot
  let firstAt = 0, chunks = 0, usage = null, finish = null, answer = "", reasoning = "";
  const cards = [];
  const begin = () => {  // the first token of any kind: thought, answer or call
    if (firstAt) return;
    firstAt = performance.now();
    bubble.classList.remove("loading");
    out.textContent = answer;
  };
  const endThought = () => {  // the answer (or a call) has started: fold the thought away once
    if (!bubble.classList.contains("in-thought")) return;
    bubble.classList.remove("in-thought");
    thought.open = false;
    thought.querySelector("summary").textContent = "Thinking";
  };
  try {
    const r = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json", ...authHeaders() },
      body: JSON.stringify(body),
      signal: state.abort.signal,
    });
    if (r.status === 401) {  // the key was revoked meanwhile; `finally` drops the unanswered turn
      bubble.remove();
      showLogin(await errorMessage(r));
      return;
    }
    if (!r.ok) throw new Error(await errorMessage(r));
    for await (const event of sseEvents(r)) {
      if (event.error) throw new Error(event.error.message || "the server reported an error");
      if (event.usage) usage = event.usage;
      const choice = (event.choices || [])[0];
      if (!choice) continue;
      const delta = choice.delta || {};
      const thinking = delta.reasoning_content ?? delta.reasoning ?? "";  // the same text twice: read one
      if (thinking) {
        begin();
        chunks += 1;
        if (!reasoning) {
          thought.hidden = false;
          thought.open = true;
          bubble.classList.add("in-thought");
        }
        reasoning += thinking;
        thought.querySelector(".thought").textContent = reasoning;
        bubble.scrollIntoView({ block: "end" });
      }
      const piece = delta.content || "";
      if (piece) {
        begin();
        endThought();
        chunks += 1;
        answer += piece;
        out.textContent = answer;
        bubble.scrollIntoView({ block: "end" });
      }
      for (const call of delta.tool_calls || []) {
        begin();
        endThought();
        const card = toolCard(bubble, cards, call.index ?? 0);
        card.name += call.function?.name || "";
        card.args += call.function?.arguments || "";
        card.nameEl.textContent = card.name;
        card.argsEl.textContent = prettyArgs(card.args);
      }
      if (choice.finish_reason) finish = choice.finish_reason;
    }
  } catch (err) {
    if (err.name !== "AbortError") $("chat-error").textContent = err.message;
    else finish = "stopped";
  } finally {
    const tokens = usage ? usage.completion_tokens : chunks;
    const thoughtTokens = usage?.completion_tokens_details?.reasoning_tokens;
    if (reasoning) {  // left open if the thought is all that came
      bubble.classList.remove("in-thought");
      thought.querySelector("summary").textContent = thoughtTokens ? `Thinking · ${thoughtTokens} tokens` : "Thinking";
    }
    const line = document.createElement("span");
    line.className = "stats";
    line.textContent = stats(tokens, started, firstAt, performance.now()) + (finish && finish !== "stop" ? ` · ${finish}` : "");
    bubble.append(line);
    bubble.classList.remove("pending", "loading");
    out.textContent = answer;
    if (answer) state.history.push({ role: "assistant", content: answer });
    else if (state.history.at(-1)?.role === "user") state.history.pop();
    state.abort = null;
    refreshHealth();
    $("send").hidden = false;
    $("stop").hidden = true;
  }
}

// ---- attachments ---------------------------------------------------------------------------

// What the server takes (PNG, JPEG, GIF, BMP images; WAV, MP3, FLAC audio): each MIME type a browser may give a
// file -> its kind and what the request names it by (an image's data: URL type, an audio part's format).
const MEDIA_TYPES = {
  "image/png": ["image", "image/png"], "image/jpeg": ["image", "image/jpeg"], "image/gif": ["image", "image/gif"],
  "image/bmp": ["image", "image/bmp"], "image/x-ms-bmp": ["image", "image/bmp"],
  "audio/wav": ["audio", "wav"], "audio/x-wav": ["audio", "wav"], "audio/wave": ["audio", "wav"],
  "audio/vnd.wave": ["audio", "wav"], "audio/mpeg": ["audio", "mp3"], "audio/mp3": ["audio", "mp3"],
  "audio/flac": ["audio", "flac"], "audio/x-flac": ["audio", "flac"],
};
// for a file the browser gives no type (or a vague one): its extension
const MEDIA_EXTENSIONS = {
  png: "image/png", jpg: "image/jpeg", jpeg: "image/jpeg", gif: "image/gif", bmp: "image/bmp",
  wav: "audio/wav", mp3: "audio/mpeg", flac: "audio/flac",
};
const MEDIA_ACCEPT = { image: "image/png,image/jpeg,image/gif,image/bmp", audio: "audio/wav,audio/mpeg,audio/flac" };
const MEDIA_TEXT = { image: "an image (PNG, JPEG, GIF, BMP)", audio: "audio (WAV, MP3, FLAC)" };

/** The kinds of file the selected model takes besides text; an upstream lists none and is sent what it is given. */
function mediaTaken() {
  const inputs = state.inputs[$("model").value];
  if (!inputs) return [];
  return inputs.length ? inputs.filter((input) => input !== "text") : ["image", "audio"];
}

/** The attach button, for the selected model: enabled when it takes images or audio, and saying which. */
function allowAttachments() {
  const kinds = mediaTaken();
  $("attach").disabled = !kinds.length;
  $("attach").title = kinds.length
    ? `Attach ${kinds.map((kind) => MEDIA_TEXT[kind]).join(" or ")}; or paste or drop it on the message`
    : "this model takes text only";
  $("attach-file").accept = kinds.map((kind) => MEDIA_ACCEPT[kind]).join(",");
}

/** A file's kind and request type, by its MIME type or else its extension; null for a file the server refuses. */
function mediaType(file) {
  const extension = file.name.includes(".") ? file.name.split(".").pop().toLowerCase() : "";
  return MEDIA_TYPES[file.type.toLowerCase()] || MEDIA_TYPES[MEDIA_EXTENSIONS[extension]] || null;
}

function readDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

/** Adds files to the next message, in order; one the server or the model would refuse is named in the error line. */
async function attach(files) {
  $("chat-error").textContent = "";
  const model = $("model").value;
  const refused = [];
  for (const file of files) {
    const name = file.name || "pasted file";
    const type = mediaType(file);
    if (!type) {
      refused.push(`${name} is not a PNG, JPEG, GIF or BMP image, nor WAV, MP3 or FLAC audio`);
      continue;
    }
    const [kind, as] = type;
    if (!mediaTaken().includes(kind)) {
      refused.push(`model \`${model}\` takes no ${kind} input`);
      continue;
    }
    try {
      const url = await readDataUrl(file);
      const data = url.slice(url.indexOf(",") + 1);
      const part = kind === "image"
        ? { type: "image_url", image_url: { url: `data:${as};base64,${data}` } }
        : { type: "input_audio", input_audio: { data, format: as } };
      state.attachments.push({ kind, name, part });
    } catch (err) {
      refused.push(`${name} could not be read: ${err.message}`);
    }
  }
  renderAttachments();
  if (refused.length) $("chat-error").textContent = refused.join("\n");
}

/** An attachment as shown: an image's thumbnail, or a chip with an audio file's name. */
function mediaItem(attachment) {
  if (attachment.kind === "image") {
    const thumb = Object.assign(document.createElement("img"), { className: "thumb", alt: attachment.name });
    thumb.src = attachment.part.image_url.url;
    thumb.title = attachment.name;
    return thumb;
  }
  const chip = Object.assign(document.createElement("span"), { className: "chip", textContent: `♪ ${attachment.name}` });
  chip.title = attachment.name;
  return chip;
}

/** The attachments waiting above the message box, each with its remove button. */
function renderAttachments() {
  const list = $("attachments");
  list.replaceChildren(...state.attachments.map((attachment) => {
    const item = document.createElement("div");
    item.className = `attachment ${attachment.kind}`;
    const remove = button("×", () => {
      state.attachments = state.attachments.filter((a) => a !== attachment);
      renderAttachments();
    }, `Remove ${attachment.name}`);
    remove.className = "remove";
    item.append(mediaItem(attachment), remove);
    return item;
  }));
  list.hidden = !state.attachments.length;
  $("prompt").required = !state.attachments.length;  // attachments alone make a message
}

/** Files dropped on the message box attach; dropped anywhere else, they are refused rather than opened in the
 * page's place (which would lose the conversation). */
function wireDrop() {
  const composer = $("composer");
  const carriesFiles = (e) => e.dataTransfer?.types.includes("Files");
  const over = (e) => {
    if (!carriesFiles(e)) return;
    e.preventDefault();
    const inside = composer.contains(e.target);
    e.dataTransfer.dropEffect = inside ? "copy" : "none";
    composer.classList.toggle("dropping", inside);
  };
  window.addEventListener("dragenter", over);
  window.addEventListener("dragover", over);
  window.addEventListener("dragleave", (e) => { if (!e.relatedTarget) composer.classList.remove("dropping"); });
  window.addEventListener("drop", (e) => {
    if (!carriesFiles(e)) return;
    e.preventDefault();
    composer.classList.remove("dropping");
    if (composer.contains(e.target)) attach([...e.dataTransfer.files]);
  });
}

// ---- library -------------------------------------------------------------------------------

const VERDICT_CLASS = { "fits on GPU": "gpu", "fits in RAM": "ram", "too big": "big" };

/** A byte count as GB/MB, one decimal. */
function bytes(n) {
  return n >= 1e9 ? `${(n / 1e9).toFixed(1)} GB` : `${Math.max(0.1, n / 1e6).toFixed(1)} MB`;
}

/** An id in a URL path: each segment encoded, the slashes kept (ids may contain `/`). */
function idPath(id) {
  return id.split("/").map(encodeURIComponent).join("/");
}

async function api(method, path, body) {
  const headers = { ...authHeaders(), ...(body ? { "Content-Type": "application/json" } : {}) };
  const r = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined });
  if (!r.ok) throw new Error(await errorMessage(r));
  return r.json();
}

async function loadLibrary() {
  $("library-error").textContent = "";
  try {
    const [library, pulls] = await Promise.all([api("GET", "/v1/library"), api("GET", "/v1/library/pulls")]);
    state.library = library.data;
    const select = $("library-capability");
    const keep = select.value;
    const all = [...new Set(state.library.flatMap((row) => row.capabilities))].sort();
    select.replaceChildren(new Option("any", ""), ...all.map((c) => new Option(c, c)));
    select.value = all.includes(keep) ? keep : "";
    for (const pull of pulls.data) if (!state.pulls[pull.model]) download(pull.model);  // after a reload: follow again
    renderLibrary();
  } catch (err) {
    $("library-error").textContent = err.message;
  }
}

function matchingRows() {
  const text = $("library-search").value.trim().toLowerCase();
  const capability = $("library-capability").value;
  return state.library.filter((row) =>
    [row.id, row.name, ...row.ollama, row.description].join(" ").toLowerCase().includes(text)
    && (!capability || row.capabilities.includes(capability)));
}

function cell(text, className) {
  return Object.assign(document.createElement("td"), { textContent: text, className: className || "" });
}

function button(label, action, title) {
  const b = Object.assign(document.createElement("button"), { type: "button", textContent: label });
  b.setAttribute("aria-label", title);
  b.addEventListener("click", action);
  return b;
}

function renderLibrary() {
  const rows = matchingRows();
  $("library-empty").hidden = rows.length > 0;
  $("library-table").tBodies[0].replaceChildren(...rows.map((row) => {
    const tr = document.createElement("tr");
    tr.dataset.id = row.id;
    const model = document.createElement("td");
    const desc = Object.assign(document.createElement("div"), { className: "desc", textContent: row.description });
    model.append(Object.assign(document.createElement("b"), { textContent: row.name }), " ",
      Object.assign(document.createElement("code"), { textContent: row.id }), desc);
    const verdict = cell("");
    verdict.append(Object.assign(document.createElement("span"),
      { className: `pill verdict ${VERDICT_CLASS[row.verdict] || ""}`, textContent: row.verdict }));
    const memory = bytes(row.memory) + (row.kv_known ? ` at ${row.ctx} tokens` : " (file only)");
    const actions = cell("", "actions");
    tr.append(model, cell(row.capabilities.join(", ")), cell((row.size_approx ? "≈ " : "") + bytes(row.size)),
      cell(memory), verdict, actions);
    renderActions(actions, row);
    return tr;
  }));
}

/** The row's buttons: Download (or its progress and Cancel) for a model not here; Load, Unload, Delete for one here. */
function renderActions(actions, row) {
  const pull = state.pulls[row.id];
  const name = row.name || row.id;
  if (pull) {
    const bar = Object.assign(document.createElement("progress"), { max: pull.total || 1, value: pull.completed });
    bar.setAttribute("aria-label", `Downloading ${name}`);
    const text = Object.assign(document.createElement("span"), { className: "hint progress-text" });
    text.textContent = pull.total ? `${bytes(pull.completed)} of ${bytes(pull.total)}` : "starting…";
    actions.replaceChildren(bar, text, button("Cancel", () => cancelPull(row.id), `Cancel the download of ${name}`));
    pull.bar = bar;
    pull.text = text;
    return;
  }
  const load = state.loads[row.id];
  if (!state.models.includes(row.id)) {
    actions.replaceChildren(button("Download", () => download(row.id), `Download ${name}`));
    return;
  }
  const status = Object.assign(document.createElement("span"), { className: "hint" });
  status.textContent = STATUS_TEXT[load?.state] || "here";
  actions.replaceChildren(status,
    button("Load", () => modelAction(row.id, "load"), `Load ${name}`),
    button("Unload", () => modelAction(row.id, "unload"), `Unload ${name}`),
    button("Delete", () => deleteModel(row.id, name), `Delete ${name}`));
}

function rowActions(id) {
  const row = state.library.find((r) => r.id === id);
  const tr = [...$("library-table").tBodies[0].rows].find((r) => r.dataset.id === id);
  if (row && tr) renderActions(tr.querySelector(".actions"), row);
}

/** Starts the download of `id` (or follows the one under way) and shows its progress until it ends. */
async function download(id) {
  $("library-error").textContent = "";
  const pull = state.pulls[id] = { completed: 0, total: 0, abort: new AbortController() };
  rowActions(id);
  let end = null;
  try {
    const r = await fetch("/v1/library/pulls", {
      method: "POST",
      headers: { "Content-Type": "application/json", ...authHeaders() },
      body: JSON.stringify({ model: id }),
      signal: pull.abort.signal,
    });
    if (!r.ok) throw new Error(await errorMessage(r));
    for await (const event of sseEvents(r)) {
      if (event.status !== "downloading") {
        end = event;
        continue;
      }
      Object.assign(pull, { completed: event.completed, total: event.total || 0 });
      if (pull.bar) {
        pull.bar.max = pull.total || 1;
        pull.bar.value = pull.completed;
        pull.text.textContent = `${bytes(pull.completed)} of ${bytes(pull.total)}`;
      }
    }
    if (end?.status === "error") throw new Error(end.error);
    if (end?.status === "cancelled") $("library-error").textContent = `The download of ${id} was cancelled.`;
  } catch (err) {
    if (err.name !== "AbortError") $("library-error").textContent = err.message;
  } finally {
    delete state.pulls[id];
    if (end?.status === "success") await loadModels();  // the chat picker offers it now
    rowActions(id);
  }
}

async function cancelPull(id) {
  try {
    await api("DELETE", `/v1/library/pulls/${idPath(id)}`);
  } catch (err) {
    $("library-error").textContent = err.message;
  }
}

async function modelAction(id, action) {
  $("library-error").textContent = "";
  try {
    const card = await api("POST", `/v1/models/${idPath(id)}/${action}`);
    state.loads[id] = { state: card.status, error: card.error };
    labelModels();
    refreshHealth();
  } catch (err) {
    $("library-error").textContent = err.message;
  }
  rowActions(id);
}

async function deleteModel(id, name) {
  if (!confirm(`Delete ${name}? Its downloaded files are removed.`)) return;
  $("library-error").textContent = "";
  try {
    await api("DELETE", `/v1/models/${idPath(id)}`);
    await loadModels();
  } catch (err) {
    $("library-error").textContent = err.message;
  }
  rowActions(id);
}

// ---- service details -----------------------------------------------------------------------

const SNIPPETS = {
  curl: (base, model, key) => `curl ${base}/chat/completions \\
  -H "Authorization: Bearer ${key ? key : "$EDGE_RUN_API_KEY"}" \\
  -H "Content-Type: application/json" \\
  -d '{"model": "${model}", "messages": [{"role": "user", "content": "Hello!"}]}'`,
  python: (base, model, key) => `${key ? "" : "import os\n\n"}from openai import OpenAI

client = OpenAI(base_url="${base}", api_key=${key ? `"${key}"` : 'os.environ["EDGE_RUN_API_KEY"]'})
reply = client.chat.completions.create(
    model="${model}",
    messages=[{"role": "user", "content": "Hello!"}],
)
print(reply.choices[0].message.content)`,
  node: (base, model, key) => `import OpenAI from "openai";

const client = new OpenAI({ baseURL: "${base}", apiKey: ${key ? `"${key}"` : "process.env.EDGE_RUN_API_KEY"} });
const reply = await client.chat.completions.create({
  model: "${model}",
  messages: [{ role: "user", content: "Hello!" }],
});
console.log(reply.choices[0].message.content);`,
};

function renderDetails() {
  const base = `${location.origin}/v1`;
  const model = $("details-model").value;
  const authOff = !state.key;
  // Without auth the SDKs still want some key; any string works.
  const shown = authOff ? "unused" : (state.revealed ? state.key : null);
  $("d-base").textContent = base;
  $("d-url").textContent = `${base}/chat/completions`;
  $("d-model").textContent = model;
  $("d-auth").textContent = authOff
    ? "none needed (this server runs with --no-auth)"
    : `Authorization: Bearer ${state.revealed ? state.key : "<your API key>"}`;
  $("reveal").hidden = authOff;
  $("reveal").textContent = state.revealed ? "Hide key" : "Reveal key";
  $("snippet-code").textContent = SNIPPETS[state.tab](base, model, shown);
  $("snippet-hint").textContent = authOff || state.revealed
    ? "This snippet contains the key: treat it like a password."
    : "Set EDGE_RUN_API_KEY to your key (edge-run keys create), or press Reveal key to fill in this browser's key.";
  for (const tab of document.querySelectorAll("[data-tab]")) {
    tab.setAttribute("aria-selected", String(tab.dataset.tab === state.tab));
  }
}

async function copy(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch (_) {  // no clipboard API outside secure contexts (e.g. a LAN address over http)
    const area = document.createElement("textarea");
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  const label = button.textContent;
  button.textContent = "Copied";
  setTimeout(() => { button.textContent = label; }, 1200);
}

// ---- usage ---------------------------------------------------------------------------------

const SVG_NS = "http://www.w3.org/2000/svg";
const SERIES = 6;  // key colours: .series-1 … .series-6 in app.css, reused in turn
const CHART = { width: 760, height: 220, left: 48, right: 8, top: 10, bottom: 24 };
const TOTALS = ["requests", "prompt_tokens", "completion_tokens", "total_tokens"];
const compact = new Intl.NumberFormat(undefined, { notation: "compact" });

function svg(tag, attributes, text) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attributes)) el.setAttribute(name, String(value));
  if (text !== undefined) el.textContent = text;
  return el;
}

/** YYYY-MM-DD in local time, as the server groups days. */
function localDay(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
}

/** Every day from `since` (Unix time) to today, so days without usage show too, plus any the server reported. */
function daysSince(since, reported) {
  const days = new Set(reported);
  const today = localDay(new Date());
  for (const day = new Date(since * 1000); localDay(day) <= today; day.setDate(day.getDate() + 1)) days.add(localDay(day));
  return [...days].sort();
}

/** A round step (1, 2 or 5 × 10ⁿ tokens, at least 1) that reaches `max` in at most four ticks. */
function tickStep(max) {
  const rough = max / 4;
  const power = 10 ** Math.floor(Math.log10(rough));
  return Math.max(1, [1, 2, 5, 10].map((m) => m * power).find((step) => step >= rough));
}

/** Stacked bars of total tokens: one bar per day, one segment per key. */
function renderChart(days, keys, cells) {
  const { width, height, left, right, top, bottom } = CHART;
  const tokens = (day, key) => cells.get(`${day}\t${key}`)?.total_tokens || 0;
  const highest = Math.max(1, ...days.map((day) => keys.reduce((n, key) => n + tokens(day, key), 0)));
  const step = tickStep(highest);
  const ceiling = Math.ceil(highest / step) * step;
  const y = (n) => top + (height - top - bottom) * (1 - n / ceiling);
  const slot = (width - left - right) / days.length;
  const labelEvery = Math.ceil(days.length / 10);
  const parts = [];
  for (let n = 0; n <= ceiling; n += step) {
    parts.push(svg("line", { class: "grid", x1: left, x2: width - right, y1: y(n), y2: y(n) }));
    parts.push(svg("text", { class: "tick-y", x: left - 6, y: y(n) }, compact.format(n)));
  }
  days.forEach((day, i) => {
    const group = svg("g", { "data-day": day });
    let below = 0;
    keys.forEach((key, k) => {
      const n = tokens(day, key);
      if (!n) return;
      const bar = svg("rect", {
        class: `series-${(k % SERIES) + 1}`, "data-key": key,
        x: left + slot * (i + 0.15), width: slot * 0.7, y: y(below + n), height: y(below) - y(below + n),
      });
      bar.append(svg("title", {}, `${key} · ${day} · ${n.toLocaleString()} tokens`));
      group.append(bar);
      below += n;
    });
    if ((days.length - 1 - i) % labelEvery === 0) {  // counted from the end: today always has its label
      const label = new Date(`${day}T00:00`).toLocaleDateString(undefined, { month: "short", day: "numeric" });
      group.append(svg("text", { class: "tick-x", x: left + slot * (i + 0.5), y: height - 6 }, label));
    }
    parts.push(group);
  });
  const chart = $("usage-chart");
  chart.setAttribute("viewBox", `0 0 ${width} ${height}`);
  chart.replaceChildren(...parts);
}

function renderTotals(keys, rows) {
  const zero = () => Object.fromEntries(TOTALS.map((field) => [field, 0]));
  const perKey = new Map(keys.map((key) => [key, zero()]));
  const all = zero();
  for (const row of rows) {
    for (const field of TOTALS) {
      perKey.get(row.key)[field] += row[field];
      all[field] += row[field];
    }
  }
  const line = (cell, name, sums) => {
    const tr = document.createElement("tr");
    for (const text of [name, ...TOTALS.map((field) => sums[field].toLocaleString())]) {
      tr.append(Object.assign(document.createElement(cell), { textContent: text }));
    }
    return tr;
  };
  $("usage-table").tBodies[0].replaceChildren(...keys.map((key) => line("td", key, perKey.get(key))));
  $("usage-table").tFoot.replaceChildren(line("th", "Total", all));
}

function renderUsage(report) {
  const rows = report.data;
  const keys = [...new Set(rows.map((row) => row.key))].sort();
  $("usage-scope").textContent = report.scope === "all keys" ? "Showing all keys" : "Showing only this key";
  $("usage-empty").hidden = rows.length > 0;
  $("usage-report").hidden = rows.length === 0;
  if (!rows.length) return;
  const cells = new Map(rows.map((row) => [`${row.group}\t${row.key}`, row]));
  renderChart(daysSince(report.since, rows.map((row) => row.group)), keys, cells);
  $("usage-legend").replaceChildren(...keys.map((key, k) => {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = `swatch series-${(k % SERIES) + 1}`;
    item.append(swatch, key);
    return item;
  }));
  renderTotals(keys, rows);
}

async function loadUsage() {
  const asked = ++state.usageAsked;
  $("usage-error").textContent = "";
  try {
    const r = await fetch(`/v1/usage?since=${$("usage-since").value}&by=day`, { headers: authHeaders(), cache: "no-store" });
    if (asked !== state.usageAsked) return;
    if (r.status === 401) {
      $("usage").close();
      showLogin(await errorMessage(r));
      return;
    }
    if (!r.ok) throw new Error(await errorMessage(r));
    const report = await r.json();
    if (asked === state.usageAsked) renderUsage(report);
  } catch (err) {
    if (asked === state.usageAsked) $("usage-error").textContent = err.message;
  }
}

// ---- wiring --------------------------------------------------------------------------------

function wire() {
  $("temperature").addEventListener("input", () => { $("temperature-value").textContent = $("temperature").value; });
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("prompt").value.trim();
    if ((!text && !state.attachments.length) || state.abort) return;
    const attachments = state.attachments;
    state.attachments = [];
    renderAttachments();
    $("prompt").value = "";
    send(text, attachments);
  });
  $("model").addEventListener("change", allowAttachments);
  $("attach").addEventListener("click", () => $("attach-file").click());
  $("attach-file").addEventListener("change", async () => {
    const input = $("attach-file");
    await attach([...input.files]);
    input.value = "";  // the same file again is a change too
  });
  $("prompt").addEventListener("paste", (e) => {
    const files = [...(e.clipboardData?.files || [])];
    if (!files.length) return;  // text: the box takes it as always
    e.preventDefault();
    attach(files);
  });
  wireDrop();
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("stop").addEventListener("click", () => state.abort && state.abort.abort());
  $("new-chat").addEventListener("click", () => {
    if (state.abort) state.abort.abort();
    state.history = [];
    state.attachments = [];
    renderAttachments();
    $("messages").replaceChildren();
    $("chat-error").textContent = "";
    $("prompt").focus();
  });
  $("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    saveKey($("login-key").value.trim(), $("login-remember").checked);
    $("login-key").value = "";
    await enter();
  });
  $("logout").addEventListener("click", () => {
    forgetKey();
    showLogin("Logged out. The key itself still works until you run `edge-run keys revoke`.");
  });
  $("details-open").addEventListener("click", () => {
    $("details-model").value = $("model").value;
    state.revealed = false;
    renderDetails();
    $("details").showModal();
  });
  $("details").addEventListener("close", () => { state.revealed = false; });
  $("usage-open").addEventListener("click", () => {
    $("usage").showModal();
    loadUsage();
  });
  $("usage-since").addEventListener("change", loadUsage);
  $("view-chat").addEventListener("click", () => showView("chat"));
  $("view-library").addEventListener("click", () => showView("library"));
  $("library-filters").addEventListener("submit", (e) => e.preventDefault());
  $("library-search").addEventListener("input", renderLibrary);
  $("library-capability").addEventListener("change", renderLibrary);
  $("details-model").addEventListener("change", renderDetails);
  $("reveal").addEventListener("click", () => { state.revealed = !state.revealed; renderDetails(); });
  for (const tab of document.querySelectorAll("[data-tab]")) {
    tab.addEventListener("click", () => { state.tab = tab.dataset.tab; renderDetails(); });
  }
  for (const button of document.querySelectorAll("[data-copy]")) {
    button.addEventListener("click", () => copy($(button.dataset.copy).textContent, button));
  }
}

async function boot() {
  const code = takeLoginCode();
  state.key = loadKey();
  wire();
  refreshHealth();
  setInterval(refreshHealth, HEALTH_EVERY_MS);
  if (code) {
    try {
      await exchange(code);
    } catch (err) {
      if (!state.key) return showLogin(err.message);
    }
  }
  try {
    await enter();
  } catch (err) {
    showLogin(err.message);
  }
}

boot();
