// The status line, driven by GET /health: every 250 ms until the model is ready, then every
// 1.5 s (showing the queue when busy). window.__statusLog records each state it displayed.

import { getHealth } from "./api.js";

const FAST_MS = 250;
const SLOW_MS = 1500;

// The status in words, and the model it is about (hidden on narrow screens).
function describe(health) {
  const name = health.model?.name || "the model";
  switch (health.status) {
    case "loading": return [`Loading ${name}…`, ""];
    case "warming": return [`Warming up ${name}…`, ""];
    case "failed": return [`Failed: ${health.error || "the model could not be loaded"}`, ""];
    case "ready": {
      const running = health.running || 0;
      const waiting = health.waiting || 0;
      if (!running && !waiting) return ["Ready", name];
      const queue = waiting ? `, ${waiting} waiting` : "";
      return [`Busy: ${running} generating${queue}`, name];
    }
    default: return [`Unknown status: ${health.status}`, ""];
  }
}

export function startStatus(element, onChange = () => {}) {
  const textElement = element.querySelector("#status-text");
  const modelElement = element.querySelector("#status-model");
  window.__statusLog = [];
  let state = null;
  let timer = null;
  let polling = false;

  function show(next, [text, model]) {
    element.dataset.state = next;
    textElement.textContent = text;
    modelElement.textContent = model ? ` · ${model}` : "";
    if (next !== state) {
      state = next;
      window.__statusLog.push(next);
      onChange(next);
    }
  }

  async function poll() {
    polling = true;
    try {
      const health = await getHealth(AbortSignal.timeout(3000));
      show(health.status, describe(health));
    } catch {
      show("offline", ["Cannot reach the server — retrying…", ""]);
    } finally {
      polling = false;
    }
    const settled = state === "ready" || state === "failed";
    timer = setTimeout(poll, settled ? SLOW_MS : FAST_MS);
  }

  poll();
  return {
    get state() { return state; },
    refresh() {
      if (polling) return;
      clearTimeout(timer);
      poll();
    },
  };
}
