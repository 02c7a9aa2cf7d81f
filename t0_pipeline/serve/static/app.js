// The chat page: threads, streamed answers with their reasoning and sources, demographics.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = { key: localStorage.getItem("t0-key") || "", threads: [], current: null, authRequired: false };

function showError(message) {
  const box = $("#error");
  box.textContent = message;
  box.hidden = !message;
}

async function api(path, options = {}) {
  const headers = { "Content-Type": "application/json", ...(options.headers || {}) };
  if (state.key) headers.Authorization = `Bearer ${state.key}`;
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (err) {
    throw new Error("Cannot reach the server. Is `t0 serve` running?");
  }
  if (!response.ok) {
    let detail = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body.detail) detail = typeof body.detail === "string" ? body.detail : body.detail.map((d) => d.msg).join("; ");
    } catch (_) { /* not JSON */ }
    throw new Error(detail);
  }
  return response;
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) node.append(child);
  return node;
}

function renderSources(container, sources) {
  container.replaceChildren();
  if (!sources || !sources.length) return;
  container.append("Sources: ");
  for (const s of sources) {
    const link = el("a", { href: s.url || "#", target: "_blank", rel: "noopener noreferrer", textContent: s.title });
    link.title = `relevance ${s.score}`;
    container.append(link);
  }
}

function messageNode(role, content = "", thinking = "", sources = []) {
  const node = el("div", { className: `msg ${role}` });
  if (role === "assistant") {
    const reasoning = el("details", { className: "reasoning" }, el("summary", { textContent: "Show reasoning" }), el("pre"));
    reasoning.querySelector("pre").textContent = thinking;
    reasoning.hidden = !thinking;
    node.append(reasoning);
  }
  node.append(el("div", { className: "answer", textContent: content }));
  if (role === "assistant") {
    const src = el("div", { className: "sources" });
    renderSources(src, sources);
    node.append(src, el("div", { className: "status" }));
  }
  $("#messages").append(node);
  node.scrollIntoView({ block: "end" });
  return node;
}

function renderThreads() {
  const list = $("#threads");
  list.replaceChildren();
  for (const t of state.threads) {
    const del = el("button", { type: "button", textContent: "×", title: "Delete conversation" });
    del.setAttribute("aria-label", `Delete ${t.title}`);
    del.addEventListener("click", (e) => { e.stopPropagation(); deleteThread(t.id); });
    const item = el("li", { className: t.id === state.current ? "active" : "" }, el("span", { textContent: t.title }), del);
    item.dataset.id = t.id;
    item.addEventListener("click", () => selectThread(t.id));
    list.append(item);
  }
}

async function loadThreads() {
  state.threads = await (await api("/api/threads")).json();
  renderThreads();
}

function fillDemographics(d) {
  const form = $("#demographics");
  for (const name of ["age", "sex", "occupation", "social_support", "medical_history"]) {
    form.elements[name].value = d && d[name] != null ? d[name] : "";
  }
}

async function selectThread(id) {
  showError("");
  const thread = await (await api(`/api/threads/${id}`)).json();
  state.current = id;
  $("#messages").replaceChildren();
  for (const m of thread.messages) messageNode(m.role, m.content, m.thinking, m.sources);
  fillDemographics(thread.demographics);
  renderThreads();
}

async function newThread() {
  const thread = await (await api("/api/threads", { method: "POST", body: "{}" })).json();
  state.threads.unshift(thread);
  await selectThread(thread.id);
}

async function deleteThread(id) {
  await api(`/api/threads/${id}`, { method: "DELETE" });
  state.threads = state.threads.filter((t) => t.id !== id);
  if (state.current === id) {
    state.current = null;
    $("#messages").replaceChildren();
  }
  renderThreads();
}

async function saveDemographics(event) {
  event.preventDefault();
  const form = $("#demographics");
  const body = {};
  for (const name of ["age", "sex", "occupation", "social_support", "medical_history"]) {
    const value = form.elements[name].value.trim();
    if (value) body[name] = name === "age" ? Number(value) : value;
  }
  if (!state.current) await newThread();  // read the form first: opening the new thread refills it
  const thread = await (await api(`/api/threads/${state.current}/demographics`, { method: "PUT", body: JSON.stringify(body) })).json();
  fillDemographics(thread.demographics);
  $("#demographics-status").textContent = "Saved.";
}

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

async function send(event) {
  event.preventDefault();
  const input = $("#input");
  const text = input.value.trim();
  if (!text) return;
  showError("");
  $("#send").disabled = true;
  try {
    if (!state.current) await newThread();
    messageNode("user", text);
    input.value = "";
    const node = messageNode("assistant");
    const reasoning = node.querySelector("details.reasoning");
    const thinking = reasoning.querySelector("pre");
    const answer = node.querySelector(".answer");
    const status = node.querySelector(".status");
    status.textContent = "Thinking…";
    const response = await api(`/api/threads/${state.current}/messages/stream`, {
      method: "POST", body: JSON.stringify({ content: text }),
    });
    for await (const { event: kind, data } of sseEvents(response)) {
      if (kind === "search") status.textContent = `Searching: ${data.text}`;
      else if (kind === "sources") renderSources(node.querySelector(".sources"), data);
      else if (kind === "thinking") { reasoning.hidden = false; thinking.textContent += data.text; }
      else if (kind === "answer") { answer.textContent += data.text; status.textContent = ""; }
      else if (kind === "final") { answer.textContent = data.content; status.textContent = ""; }
      else if (kind === "error") { status.textContent = ""; showError(`The assistant could not answer: ${data.detail}`); }
    }
    await loadThreads();
  } catch (err) {
    showError(err.message);
  } finally {
    $("#send").disabled = false;
  }
}

async function start() {
  try {
    const config = await (await fetch("/api/config")).json();
    state.authRequired = config.auth_required;
    $("#key-box").hidden = !config.auth_required;
    $("#api-key").value = state.key;
    $("#input").maxLength = config.max_message_chars;
    if (!config.auth_required || state.key) {
      await loadThreads();
      if (state.threads.length) await selectThread(state.threads[0].id);
    }
  } catch (err) {
    showError(err.message);
  }
}

$("#save-key").addEventListener("click", async () => {
  state.key = $("#api-key").value.trim();
  localStorage.setItem("t0-key", state.key);
  showError("");
  try { await loadThreads(); } catch (err) { showError(err.message); }
});
$("#new-thread").addEventListener("click", () => newThread().catch((err) => showError(err.message)));
$("#composer").addEventListener("submit", send);
$("#demographics").addEventListener("submit", (e) => saveDemographics(e).catch((err) => showError(err.message)));
$("#input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("#composer").requestSubmit(); }
});
start();
