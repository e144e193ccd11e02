// What the browser remembers (localStorage): conversations and settings.

const CONVERSATIONS = "warmlm.conversations";
const CURRENT = "warmlm.current";
const SETTINGS = "warmlm.settings";

export const DEFAULT_SETTINGS = Object.freeze({
  system: "You are a helpful assistant.",
  temperature: 0.7,
  maxTokens: 512,
  model: "",
  allInOne: false,
});

function load(key, fallback) {
  try {
    const value = JSON.parse(localStorage.getItem(key));
    return value ?? fallback;
  } catch {
    return fallback;
  }
}

function save(key, value) {
  try {
    localStorage.setItem(key, JSON.stringify(value));
  } catch { /* storage full or disabled: keep working in memory */ }
}

export function loadSettings() {
  return { ...DEFAULT_SETTINGS, ...load(SETTINGS, {}) };
}

export function saveSettings(settings) {
  save(SETTINGS, settings);
}

function newId() {
  return `c${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
}

// The list of conversations, newest first. Each: {id, title, messages, updated}; a message is
// {role, content, stats?, sentiment?, error?, stopped?}.
export class Conversations {
  constructor() {
    this.items = load(CONVERSATIONS, []).filter((c) => c && c.id && Array.isArray(c.messages));
    this.currentId = load(CURRENT, null);
    if (!this.items.length) this.create();
    if (!this.get(this.currentId)) this.currentId = this.items[0].id;
  }

  get(id) {
    return this.items.find((c) => c.id === id) || null;
  }

  get current() {
    return this.get(this.currentId);
  }

  create() {
    const conversation = { id: newId(), title: "New chat", messages: [], updated: Date.now() };
    this.items.unshift(conversation);
    this.currentId = conversation.id;
    this.persist();
    return conversation;
  }

  select(id) {
    if (this.get(id)) this.currentId = id;
    this.persist();
  }

  rename(id, title) {
    const conversation = this.get(id);
    if (conversation && title.trim()) conversation.title = title.trim().slice(0, 80);
    this.persist();
  }

  remove(id) {
    this.items = this.items.filter((c) => c.id !== id);
    if (!this.items.length) this.create();
    if (!this.get(this.currentId)) this.currentId = this.items[0].id;
    this.persist();
  }

  // Call after changing a conversation's messages; names it after its first message.
  touch(conversation) {
    conversation.updated = Date.now();
    const first = conversation.messages.find((m) => m.role === "user");
    if (conversation.title === "New chat" && first) {
      const line = first.content.trim().split("\n")[0];
      conversation.title = line.length > 40 ? `${line.slice(0, 40)}…` : line || "New chat";
    }
    this.items.sort((a, b) => b.updated - a.updated);
    this.persist();
  }

  persist() {
    save(CONVERSATIONS, this.items);
    save(CURRENT, this.currentId);
  }
}
