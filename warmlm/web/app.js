// The chat page: conversations, streaming replies, stop / regenerate / edit, settings, status.

import { ApiError, classify, getModels, onUnauthorized, streamChat } from "./api.js";
import { Conversations, DEFAULT_SETTINGS, loadSettings, saveSettings } from "./store.js";
import { renderMarkdown } from "./markdown.js";
import { startStatus } from "./status.js";
import { askForKey, initSettings } from "./panels.js";
import {
  copyText, editMessage, editTitle, renderConversationList, renderMessage, setBadge, setReplyText,
} from "./view.js";

const $ = (id) => document.getElementById(id);
const SENTIMENT = ["positive", "negative"];

const store = new Conversations();
const settings = loadSettings();
let live = null; // the reply being streamed: {conversation, message, element, controller}
let classifyAvailable = true;
let status = null; // the status line (startStatus)

// ---- rendering -------------------------------------------------------------------------------

function renderSidebar() {
  renderConversationList(store.items, store.currentId);
}

function renderChat() {
  const conversation = store.current;
  $("chat-title").textContent = conversation.title;
  document.title = `${conversation.title} · warmlm`;
  const box = $("messages");
  const messages = conversation.messages;
  const lastUser = messages.findLastIndex((m) => m.role === "user");
  const elements = messages.map((message, i) => {
    const streaming = live?.message === message;
    const el = renderMessage(message, i, {
      last: i === messages.length - 1,
      streaming,
      editable: !live && i === lastUser,
    });
    if (streaming) live.element = el;
    return el;
  });
  $("empty").hidden = elements.length > 0;
  box.replaceChildren($("empty"), ...elements);
  scrollToEnd(true);
}

function render() {
  renderSidebar();
  renderChat();
}

function scrollToEnd(force = false) {
  const box = $("messages");
  const near = box.scrollHeight - box.scrollTop - box.clientHeight < 120;
  if (force || near) box.scrollTop = box.scrollHeight;
}

function setBusy(busy) {
  $("send").hidden = busy;
  $("stop").hidden = !busy;
  if (!busy) $("prompt").focus();
}

// ---- sending and streaming ---------------------------------------------------------------------

function requestFor(conversation, upTo) {
  const messages = [];
  if (settings.system.trim()) messages.push({ role: "system", content: settings.system });
  for (const m of conversation.messages.slice(0, upTo)) {
    if (m.role === "user" || m.content) messages.push({ role: m.role, content: m.content });
  }
  const request = {
    messages,
    temperature: Number(settings.temperature),
    max_tokens: Number(settings.maxTokens) || DEFAULT_SETTINGS.maxTokens,
  };
  if (settings.model) request.model = settings.model;
  return request;
}

async function addSentiment(conversation, message) {
  if (!settings.allInOne || !classifyAvailable) return;
  try {
    const result = await classify(message.content, SENTIMENT, "sentiment");
    if (result === null) {
      classifyAvailable = false;
      return;
    }
    message.sentiment = result;
    store.persist();
    const index = conversation.messages.indexOf(message);
    const el = document.querySelector(`.msg[data-index="${index}"]`);
    if (store.current === conversation && el) setBadge(el, result);
  } catch (err) {
    console.warn("sentiment badge unavailable:", err);
  }
}

// Streams the assistant's answer to the conversation's last (user) message.
async function respond(conversation) {
  const question = conversation.messages[conversation.messages.length - 1];
  const message = { role: "assistant", content: "" };
  const request = requestFor(conversation, conversation.messages.length);
  conversation.messages.push(message);
  live = { conversation, message, element: null, controller: new AbortController() };
  store.touch(conversation);
  render();
  setBusy(true);
  addSentiment(conversation, question);
  setTimeout(() => status?.refresh(), 300);

  const started = performance.now();
  let first = null;
  let frame = 0;
  const paint = () => {
    frame = 0;
    if (live?.element) setReplyText(live.element, message.content);
    scrollToEnd();
  };
  try {
    const { finishReason, usage } = await streamChat(request, {
      signal: live.controller.signal,
      onDelta(text) {
        first ??= performance.now();
        message.content += text;
        if (live.element) live.element.dataset.raw = message.content;
        frame ||= requestAnimationFrame(paint);
      },
    });
    message.stats = statsOf(started, first, performance.now(), usage, finishReason);
  } catch (err) {
    if (err.name === "AbortError") {
      message.stopped = true;
      if (first) message.stats = { ttft: (first - started) / 1000 };
    } else {
      message.error = err instanceof ApiError ? err.message : `Something went wrong: ${err}`;
    }
  } finally {
    cancelAnimationFrame(frame);
    live = null;
    store.touch(conversation);
    if (store.current === conversation) renderChat();
    renderSidebar();
    setBusy(false);
    status?.refresh();
  }
}

function statsOf(started, first, ended, usage, finishReason) {
  const tokens = usage?.completion_tokens ?? null;
  const decodeSeconds = first ? (ended - first) / 1000 : 0;
  return {
    ttft: first ? (first - started) / 1000 : null,
    tps: tokens > 1 && decodeSeconds > 0 ? (tokens - 1) / decodeSeconds : null,
    tokens,
    cached: usage?.prompt_tokens_details?.cached_tokens ?? null,
    finishReason,
  };
}

function send(text) {
  if (live || !text.trim()) return;
  const conversation = store.current;
  conversation.messages.push({ role: "user", content: text });
  respond(conversation);
}

function stop() {
  live?.controller.abort();
}

// Drops the last reply (failed or not) and asks again.
function regenerate() {
  const conversation = store.current;
  if (live || conversation.messages.at(-1)?.role !== "assistant") return;
  conversation.messages.pop();
  respond(conversation);
}

async function edit(el) {
  const conversation = store.current;
  const index = Number(el.dataset.index);
  const text = await editMessage(el, conversation.messages[index].content);
  if (text === null || live) {
    renderChat();
    return;
  }
  conversation.messages.splice(index);
  conversation.messages.push({ role: "user", content: text });
  respond(conversation);
}

// ---- wiring ------------------------------------------------------------------------------------

function wireComposer() {
  const prompt = $("prompt");
  const grow = () => {
    prompt.style.height = "auto";
    prompt.style.height = `${Math.min(prompt.scrollHeight, 240)}px`;
  };
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    if (live || !prompt.value.trim()) return;
    const text = prompt.value;
    prompt.value = "";
    grow();
    send(text);
  });
  prompt.addEventListener("input", grow);
  prompt.addEventListener("keydown", (e) => {
    // An input method (Chinese, Japanese, …) uses Enter to commit its text: never send then.
    if (e.key !== "Enter" || e.shiftKey || e.isComposing || e.keyCode === 229) return;
    e.preventDefault();
    $("composer").requestSubmit();
  });
  $("stop").addEventListener("click", stop);
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && live) stop();
  });
}

function wireMessages() {
  $("messages").addEventListener("click", (e) => {
    const target = e.target.closest("button");
    if (!target) return;
    const el = target.closest(".msg");
    if (target.classList.contains("copy")) {
      copyText(target.closest(".code").querySelector("code").textContent, target);
    } else if (target.dataset.action === "copy-reply") {
      copyText(el.dataset.raw, target);
    } else if (["regenerate", "retry"].includes(target.dataset.action)) {
      regenerate();
    } else if (target.dataset.action === "edit" && !live) {
      edit(el);
    }
  });
}

function closeSidebar() {
  document.body.classList.remove("sidebar-open");
  $("scrim").hidden = true;
  $("toggle-sidebar").setAttribute("aria-expanded", "false");
}

function wireSidebar() {
  $("new-chat").addEventListener("click", () => {
    const empty = store.current.messages.length === 0 && store.current !== live?.conversation;
    if (!empty) store.create();
    render();
    closeSidebar();
    $("prompt").focus();
  });
  $("conversations").addEventListener("click", async (e) => {
    const target = e.target.closest("button");
    const li = e.target.closest("li");
    if (!target || !li) return;
    const id = li.dataset.id;
    if (target.dataset.action === "open") {
      store.select(id);
      render();
      closeSidebar();
    } else if (target.dataset.action === "rename") {
      const title = await editTitle(li, store.get(id).title);
      if (title !== null) store.rename(id, title);
      render();
    } else if (target.dataset.action === "delete") {
      if (live?.conversation.id === id) stop();
      store.remove(id);
      render();
    }
  });
  $("toggle-sidebar").addEventListener("click", () => {
    const open = !document.body.classList.contains("sidebar-open");
    document.body.classList.toggle("sidebar-open", open);
    $("scrim").hidden = !open;
    $("toggle-sidebar").setAttribute("aria-expanded", String(open));
  });
  $("scrim").addEventListener("click", closeSidebar);
}

async function loadModels() {
  try {
    const models = await getModels();
    const select = $("set-model");
    select.replaceChildren(...models.map((id) => new Option(id, id)));
    if (!models.includes(settings.model)) {
      settings.model = models[0] || "";
      saveSettings(settings);
    }
    select.value = settings.model;
  } catch (err) {
    console.warn("could not list models:", err);
  }
}

onUnauthorized(askForKey);
initSettings(settings, () => saveSettings(settings));
wireComposer();
wireMessages();
wireSidebar();
render();
status = startStatus($("status"), (state) => {
  if (state === "ready") loadModels();
});
$("prompt").focus();

// For tests and the curious: the page's own Markdown renderer.
window.warmlm = { renderMarkdown };
