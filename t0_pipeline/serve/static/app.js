// The chat page: threads, streamed answers rendered as sanitised Markdown with their reasoning and
// sources, failed turns marked with a retry, personal details per key (prefilled) and per conversation.
"use strict";

const $ = (sel) => document.querySelector(sel);
// the person's details the form asks for: the NHS domain's until /api/config names the domain's own
let FIELDS = ["age", "sex", "occupation", "social_support", "medical_history"];
let NUMERIC = new Set(["age"]);
const KEY_HELP = "This service needs an API key. Ask whoever runs it for one, then enter it here.";
const state = {
  key: sessionStorage.getItem("t0-key") || localStorage.getItem("t0-key") || "",
  threads: [], current: null, authRequired: false, busy: false,
};

// --- Markdown: marked renders, DOMPurify sanitises; raw HTML shows as text, links only http(s) ----------------
const SAFE_URL = /^https?:\/\//i;
const escapeHtml = (s) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
marked.use({ gfm: true, breaks: true, renderer: { html: (token) => escapeHtml(token.text || token.raw || "") } });
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    const href = node.getAttribute("href") || "";
    if (!SAFE_URL.test(href)) node.removeAttribute("href");
    else { node.setAttribute("target", "_blank"); node.setAttribute("rel", "noopener noreferrer"); }
  }
});
const ALLOWED_TAGS = ["p", "br", "strong", "em", "b", "i", "del", "code", "pre", "blockquote", "ul", "ol", "li", "a",
  "h1", "h2", "h3", "h4", "h5", "h6", "hr", "table", "thead", "tbody", "tr", "th", "td"];

function renderMarkdown(container, text) {
  const html = DOMPurify.sanitize(marked.parse(text || ""), { ALLOWED_TAGS, ALLOWED_ATTR: ["href", "title"] });
  container.innerHTML = html;  // sanitised just above: no script, no event handlers, no non-http(s) links
}

// --- plumbing -----------------------------------------------------------------------------------------
function showError(message) {
  const box = $("#error");
  box.textContent = message;
  box.hidden = !message;
}

class ApiError extends Error {
  constructor(message, status, body) { super(message); this.status = status; this.body = body || {}; }
}

async function api(path, options = {}) {
  const headers = { "Content-Type": "application/json", ...(options.headers || {}) };
  if (state.key) headers.Authorization = `Bearer ${state.key}`;
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (err) {
    throw new ApiError("The service cannot be reached. Check your connection and try again.", 0);
  }
  if (!response.ok) {
    let body = {};
    try { body = await response.json(); } catch (_) { /* not JSON */ }
    let detail = typeof body.detail === "string" ? body.detail
      : Array.isArray(body.detail) ? body.detail.map((d) => d.msg.replace(/^Value error, /, "")).join("; ")
        : `${response.status} ${response.statusText}`;
    if (response.status === 401) { detail = KEY_HELP; askForKey(); }
    throw new ApiError(detail, response.status, body);
  }
  return response;
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) if (child != null) node.append(child);
  return node;
}

function askForKey() {
  $("#key-box").hidden = false;
  $("#api-key").focus();
}

// --- messages -----------------------------------------------------------------------------------------
function renderSources(container, sources) {
  container.replaceChildren();
  if (!sources || !sources.length) return;
  container.append("Sources: ");
  for (const s of sources) {
    const safe = SAFE_URL.test(s.url || "");
    const item = safe ? el("a", { href: s.url, target: "_blank", rel: "noopener noreferrer", textContent: s.title })
      : el("span", { textContent: s.title });  // no link for a URL that is not http(s)
    item.title = `relevance ${s.score}`;
    container.append(item);
  }
}

function scrollDown(node) { node.scrollIntoView({ block: "end" }); }

function userNode(m) {
  const node = el("div", { className: "msg user", textContent: m.content });
  node.dataset.id = m.id || "";
  if (m.status === "failed") markFailed(node, m);
  $("#messages").append(node);
  scrollDown(node);
  return node;
}

function markFailed(node, m) {
  node.classList.add("failed");
  node.querySelector(".failure")?.remove();
  const retry = el("button", { type: "button", textContent: "Retry" });
  retry.addEventListener("click", () => retryMessage(node, m));
  node.append(el("div", { className: "failure" }, el("span", { textContent: "Not answered." }), retry));
}

function assistantNode(m = {}) {
  const node = el("div", { className: "msg assistant" });
  const reasoning = el("details", { className: "reasoning" }, el("summary", { textContent: "Show reasoning" }),
    el("div", { className: "thinking" }));
  reasoning.hidden = !m.thinking;
  if (m.thinking) renderMarkdown(reasoning.querySelector(".thinking"), m.thinking);
  const answer = el("div", { className: "answer" });
  if (m.content) renderMarkdown(answer, m.content);
  const sources = el("div", { className: "sources" });
  renderSources(sources, m.sources);
  node.append(reasoning, answer, sources, el("div", { className: "status", role: "status" }));
  $("#messages").append(node);
  scrollDown(node);
  return node;
}

function errorNode(message, detail) {
  const node = el("div", { className: "msg assistant error", role: "alert" }, el("p", { textContent: message }));
  if (detail) {
    node.append(el("details", {}, el("summary", { textContent: "Technical detail" }), el("code", { textContent: detail })));
  }
  return node;
}

// --- threads ------------------------------------------------------------------------------------------
function renderThreads() {
  const list = $("#threads");
  list.replaceChildren();
  for (const t of state.threads) {
    const open = el("button", { type: "button", className: "thread", textContent: t.title });
    if (t.id === state.current) open.setAttribute("aria-current", "true");
    open.addEventListener("click", () => { selectThread(t.id).catch(fail); closeDrawer(); });
    const del = el("button", { type: "button", className: "delete", textContent: "×" });
    del.setAttribute("aria-label", `Delete conversation: ${t.title}`);
    del.addEventListener("click", () => confirmDelete(item, t));
    const item = el("li", { className: t.id === state.current ? "active" : "" }, open, del);
    item.dataset.id = t.id;
    list.append(item);
  }
}

function confirmDelete(item, t) {
  const yes = el("button", { type: "button", className: "danger", textContent: "Delete" });
  const keep = el("button", { type: "button", className: "keep", textContent: "Keep" });
  const box = el("div", { className: "confirm", role: "group" }, el("span", { textContent: `Delete “${t.title}”?` }), yes, keep);
  box.setAttribute("aria-label", "Confirm deletion");
  yes.addEventListener("click", () => deleteThread(t.id).catch(fail));
  keep.addEventListener("click", () => { renderThreads(); $(`#threads li[data-id="${t.id}"] .delete`)?.focus(); });
  box.addEventListener("keydown", (e) => { if (e.key === "Escape") keep.click(); });
  item.replaceChildren(box);
  keep.focus();
}

async function loadThreads() {
  state.threads = await (await api("/api/threads")).json();
  renderThreads();
}

// the domain's words (t0_pipeline/domain.py): the page is written for the NHS domain until they arrive
function showDomainWords(page) {
  if (page.title) { document.title = page.title; $("header h1").textContent = page.title; }
  if (page.warning || page.notice) {
    const strong = document.createElement("strong");
    strong.textContent = page.warning || "";
    $("#notice").replaceChildren(strong, document.createTextNode(" " + (page.notice || "")));
  }
  if (page.placeholder) $("#input").placeholder = page.placeholder;
}

// another domain's profile fields replace the page's own (its choices offered as suggestions)
function buildProfileForm(profile) {
  const names = profile.map((f) => f.name);
  if (!names.length || names.join() === FIELDS.join()) return;
  const form = $("#demographics");
  form.querySelectorAll("label:not(.inline), datalist").forEach((node) => node.remove());
  const anchor = form.querySelector("label.inline");
  for (const f of profile) {
    const label = document.createElement("label");
    label.textContent = f.name.replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase()) + " ";
    const input = document.createElement("input");
    input.name = f.name;
    if (f.range) {
      Object.assign(input, { type: "number", min: f.range[0], max: f.range[1], inputMode: "numeric" });
    } else {
      input.maxLength = 500;
    }
    if (f.choices && f.choices.length) {
      const list = document.createElement("datalist");
      list.id = `choices-${f.name}`;
      for (const choice of f.choices) list.append(Object.assign(document.createElement("option"), { value: choice }));
      input.setAttribute("list", list.id);
      form.insertBefore(list, anchor);
    }
    label.append(input);
    form.insertBefore(label, anchor);
  }
  FIELDS = names;
  NUMERIC = new Set(profile.filter((f) => f.range).map((f) => f.name));
}

function fillDemographics(d) {
  const form = $("#demographics");
  for (const name of FIELDS) form.elements[name].value = d && d[name] != null ? d[name] : "";
  $("#demographics-status").textContent = "";
}

async function selectThread(id) {
  showError("");
  const thread = await (await api(`/api/threads/${id}`)).json();
  state.current = id;
  $("#messages").replaceChildren();
  for (const m of thread.messages) (m.role === "user" ? userNode(m) : assistantNode(m));
  fillDemographics(thread.demographics);
  renderThreads();
}

async function newThread() {
  const thread = await (await api("/api/threads", { method: "POST", body: "{}" })).json();  // starts with my details
  state.threads.unshift(thread);
  await selectThread(thread.id);
  $("#input").focus();
}

async function deleteThread(id) {
  await api(`/api/threads/${id}`, { method: "DELETE" });
  state.threads = state.threads.filter((t) => t.id !== id);
  if (state.current === id) {
    state.current = null;
    $("#messages").replaceChildren();
  }
  renderThreads();
  ($("#threads .thread") || $("#new-thread")).focus();
}

async function saveDemographics(event) {
  event.preventDefault();
  const form = $("#demographics");
  const body = {};
  for (const name of FIELDS) {
    const value = form.elements[name].value.trim();
    if (value) body[name] = NUMERIC.has(name) ? Number(value) : value;
  }
  const asDefault = form.elements.as_default.checked;
  if (!state.current) await newThread();  // read the form first: opening the new thread refills it
  const thread = await (await api(`/api/threads/${state.current}/demographics`, { method: "PUT", body: JSON.stringify(body) })).json();
  if (asDefault) await api("/api/me/demographics", { method: "PUT", body: JSON.stringify(body) });
  fillDemographics(thread.demographics);
  $("#demographics-status").textContent = asDefault ? "Saved, also for new conversations." : "Saved for this conversation.";
}

// --- sending ------------------------------------------------------------------------------------------
async function* sseEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      yield { event, data: data ? JSON.parse(data) : null };
    }
  }
}

function setBusy(busy) {
  state.busy = busy;
  $("#send").disabled = busy;
  document.querySelectorAll(".failure button").forEach((b) => { b.disabled = busy; });
}

// One turn, streamed: the user's bubble, then a reply that fills in; on failure the reply becomes a readable
// error with the technical detail folded away, and the user's message is marked as not answered, with a retry.
async function runTurn(text, retryOf = null) {
  const mine = userNode({ content: text });
  const node = assistantNode();
  node.setAttribute("aria-busy", "true");
  const reasoning = node.querySelector("details.reasoning");
  const answer = node.querySelector(".answer");
  const status = node.querySelector(".status");
  status.textContent = "Thinking…";
  let answerText = "", thinkingText = "", pending = false, failed = null, finished = false;
  const paint = () => {  // at most once a frame: long answers stream without re-rendering on every token
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      if (thinkingText) renderMarkdown(reasoning.querySelector(".thinking"), thinkingText);
      renderMarkdown(answer, answerText);
    });
  };
  try {
    const response = await api(`/api/threads/${state.current}/messages/stream`, {
      method: "POST", body: JSON.stringify(retryOf == null ? { content: text } : { content: text, retry_of: retryOf }),
    });
    for await (const { event: kind, data } of sseEvents(response)) {
      if (kind === "user") mine.dataset.id = data.id;
      else if (kind === "search") status.textContent = `Searching: ${data.text}`;
      else if (kind === "sources") renderSources(node.querySelector(".sources"), data);
      else if (kind === "thinking") { reasoning.hidden = false; thinkingText += data.text; paint(); }
      else if (kind === "answer") { answerText += data.text; status.textContent = ""; paint(); }
      else if (kind === "final") { answerText = data.content; finished = true; status.textContent = ""; paint(); }
      else if (kind === "error") failed = data;
    }
    if (!failed && !finished) failed = { message: "The answer was cut off; try again.", detail: "the stream ended early" };
  } catch (err) {
    failed = { message: err.message, detail: err.status ? `HTTP ${err.status}` : "" };
  }
  node.removeAttribute("aria-busy");
  if (failed) {
    node.replaceWith(errorNode(failed.message, failed.detail));  // no empty reply bubble is left behind
    if (failed.message_id != null) mine.dataset.id = failed.message_id;
    if (mine.dataset.id) markFailed(mine, { id: Number(mine.dataset.id), content: text });
    else mine.classList.add("failed");
  }
}

async function send(event) {
  event.preventDefault();
  const input = $("#input");
  const text = input.value.trim();
  if (!text || state.busy) return;
  showError("");
  setBusy(true);
  try {
    if (!state.current) await newThread();
    input.value = "";
    await runTurn(text);
    await loadThreads();
  } catch (err) {
    showError(err.message);
  } finally {
    setBusy(false);
    input.focus();
  }
}

async function retryMessage(node, m) {
  if (state.busy) return;
  showError("");
  setBusy(true);
  try {
    const next = node.nextElementSibling;  // the error shown for it goes too
    if (next && next.classList.contains("error")) next.remove();
    node.remove();
    await runTurn(m.content, m.id);
    await loadThreads();
  } catch (err) {
    showError(err.message);
  } finally {
    setBusy(false);
  }
}

// --- drawer (narrow screens) ----------------------------------------------------------------------------
function openDrawer() {
  document.body.classList.add("drawer-open");
  $("#drawer-toggle").setAttribute("aria-expanded", "true");
  $("#scrim").hidden = false;
  ($("#threads .thread") || $("#new-thread")).focus();
}
function closeDrawer() {
  if (!document.body.classList.contains("drawer-open")) return;
  document.body.classList.remove("drawer-open");
  $("#drawer-toggle").setAttribute("aria-expanded", "false");
  $("#scrim").hidden = true;
}

// --- start ------------------------------------------------------------------------------------------
function fail(err) { showError(err.message); }

async function start() {
  try {
    const config = await (await fetch("/api/config")).json();
    state.authRequired = config.auth_required;
    $("#key-box").hidden = !config.auth_required || Boolean(state.key);
    $("#api-key").value = state.key;
    $("#input").maxLength = config.max_message_chars;
    showDomainWords(config.page || {});
    buildProfileForm(config.profile || []);
    if (!config.auth_required || state.key) {
      await loadThreads();
      if (state.threads.length) await selectThread(state.threads[0].id);
      else fillDemographics(await (await api("/api/me/demographics")).json());
    } else {
      showError(KEY_HELP);
    }
  } catch (err) {
    showError(err.message);
  }
  document.body.dataset.ready = "true";  // the form is filled: what is typed now stays
}

$("#key-box").addEventListener("submit", async (e) => {
  e.preventDefault();
  state.key = $("#api-key").value.trim();
  sessionStorage.setItem("t0-key", state.key);  // kept for this tab only, unless the person asks otherwise
  if ($("#remember-key").checked) localStorage.setItem("t0-key", state.key);
  else localStorage.removeItem("t0-key");
  showError("");
  try {
    await loadThreads();
    $("#key-box").hidden = true;
    if (state.threads.length) await selectThread(state.threads[0].id);
  } catch (err) { showError(err.message); }
});
$("#new-thread").addEventListener("click", () => { newThread().catch(fail); closeDrawer(); });
$("#composer").addEventListener("submit", send);
$("#demographics").addEventListener("submit", (e) => saveDemographics(e).catch(fail));
$("#demographics").addEventListener("input", () => { $("#demographics-status").textContent = ""; });
$("#input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("#composer").requestSubmit(); }
});
$("#drawer-toggle").addEventListener("click", () => {
  if (document.body.classList.contains("drawer-open")) closeDrawer(); else openDrawer();
});
$("#scrim").addEventListener("click", closeDrawer);
document.addEventListener("keydown", (e) => {
  if (e.key === "Escape" && document.body.classList.contains("drawer-open")) { closeDrawer(); $("#drawer-toggle").focus(); }
});
start();
