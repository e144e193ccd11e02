// Building the DOM: conversation list and message elements. Model text only ever reaches the
// page as textContent or through renderMarkdown (which escapes everything first).

import { renderMarkdown } from "./markdown.js";

const $ = (id) => document.getElementById(id);

function button(label, action, { title = label, className = "ghost small" } = {}) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = className;
  b.textContent = label;
  b.dataset.action = action;
  b.setAttribute("aria-label", title);
  b.title = title;
  return b;
}

// The sidebar: one row per conversation, the current one marked with aria-current.
export function renderConversationList(conversations, currentId) {
  const list = $("conversations");
  list.replaceChildren();
  for (const c of conversations) {
    const li = document.createElement("li");
    li.className = "conversation";
    li.dataset.id = c.id;
    const open = document.createElement("button");
    open.type = "button";
    open.className = "open";
    open.dataset.action = "open";
    open.textContent = c.title;
    if (c.id === currentId) open.setAttribute("aria-current", "page");
    li.append(
      open,
      button("✎", "rename", { title: `Rename “${c.title}”`, className: "ghost icon" }),
      button("✕", "delete", { title: `Delete “${c.title}”`, className: "ghost icon" }),
    );
    list.append(li);
  }
}

// Swaps a conversation's title for a text box; resolves to the new title or null.
export function editTitle(li, title) {
  return new Promise((resolve) => {
    const input = document.createElement("input");
    input.className = "rename";
    input.value = title;
    input.setAttribute("aria-label", "Conversation name");
    li.replaceChildren(input);
    input.focus();
    input.select();
    let done = false;
    const finish = (value) => {
      if (!done) {
        done = true;
        resolve(value);
      }
    };
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.isComposing && e.keyCode !== 229) finish(input.value);
      if (e.key === "Escape") finish(null);
    });
    input.addEventListener("blur", () => finish(input.value));
  });
}

function formatStats(stats) {
  const parts = [];
  if (stats.ttft != null) parts.push(`first token ${stats.ttft.toFixed(2)} s`);
  if (stats.tps != null) parts.push(`${stats.tps.toFixed(1)} tok/s`);
  if (stats.tokens != null) parts.push(`${stats.tokens} tokens`);
  if (stats.cached != null) parts.push(`${stats.cached} cached prompt tokens`);
  if (stats.finishReason === "length") parts.push("hit max tokens");
  return parts.join(" · ");
}

export function setBadge(el, sentiment) {
  const badge = el.querySelector(".badge");
  if (!sentiment || !sentiment.label) {
    badge.hidden = true;
    return;
  }
  const p = sentiment.probabilities?.[sentiment.label];
  const emoji = { positive: "😊", negative: "☹️" }[sentiment.label] || "•";
  badge.textContent = `${emoji} ${sentiment.label}${p != null ? ` ${Math.round(p * 100)}%` : ""}`;
  badge.dataset.label = sentiment.label;
  badge.title = `Sentiment: ${Object.entries(sentiment.probabilities || {})
    .map(([k, v]) => `${k} ${(v * 100).toFixed(1)}%`).join(", ")}`;
  badge.hidden = false;
}

// Re-renders a reply body from its raw text (called while streaming and when done).
export function setReplyText(el, raw) {
  el.dataset.raw = raw;
  el.querySelector(".body").innerHTML = renderMarkdown(raw);
}

// One message; `last` and `editable` decide its actions (regenerate / retry / edit).
export function renderMessage(message, index, options = {}) {
  const { last = false, streaming = false, editable = false } = options;
  const el = $("message-template").content.firstElementChild.cloneNode(true);
  const user = message.role === "user";
  el.classList.add(user ? "user" : "assistant");
  el.dataset.index = String(index);
  el.querySelector(".avatar").textContent = user ? "You" : "AI";
  el.querySelector(".who").textContent = user ? "You" : "warmlm";
  const body = el.querySelector(".body");
  if (user) {
    body.textContent = message.content;
    setBadge(el, message.sentiment);
  } else {
    setReplyText(el, message.content);
    body.setAttribute("aria-live", "polite");
    body.setAttribute("aria-busy", String(streaming));
  }
  if (streaming) el.classList.add("streaming");
  const stats = message.stats ? formatStats(message.stats) : "";
  el.querySelector(".stats").textContent =
    message.stopped ? ["stopped", stats].filter(Boolean).join(" · ") : stats;
  if (message.error) {
    const error = el.querySelector(".error");
    const text = document.createElement("span");
    text.textContent = message.error;
    error.append(text);
    if (last) error.append(button("Retry", "retry", { className: "small" }));
    error.hidden = false;
  }
  const actions = el.querySelector(".actions");
  if (!streaming && !user && message.content) actions.append(button("Copy", "copy-reply"));
  if (!streaming && !user && last && !message.error) {
    actions.append(button("↻ Regenerate", "regenerate", { title: "Regenerate this reply" }));
  }
  if (user && editable) {
    actions.append(button("✎ Edit", "edit", { title: "Edit and resend this message" }));
  }
  return el;
}

// Replaces a user message's text with an editor; resolves to the new text or null.
export function editMessage(el, text) {
  return new Promise((resolve) => {
    const body = el.querySelector(".body");
    const actions = el.querySelector(".actions");
    const area = document.createElement("textarea");
    area.className = "edit-box";
    area.value = text;
    area.rows = Math.min(10, text.split("\n").length + 1);
    area.setAttribute("aria-label", "Edit your message");
    const save = button("Save & send", "edit-save", { className: "primary small" });
    const cancel = button("Cancel", "edit-cancel");
    body.replaceChildren(area);
    actions.replaceChildren(cancel, save);
    area.focus();
    save.addEventListener("click", () => resolve(area.value.trim() || null));
    cancel.addEventListener("click", () => resolve(null));
    area.addEventListener("keydown", (e) => {
      if (e.key === "Escape") resolve(null);
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
        e.preventDefault();
        resolve(area.value.trim() || null);
      }
    });
  });
}

export async function copyText(text, feedbackButton) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const area = document.createElement("textarea");
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  if (feedbackButton) {
    const label = feedbackButton.textContent;
    feedbackButton.textContent = "Copied";
    setTimeout(() => { feedbackButton.textContent = label; }, 1500);
  }
}
