// The two dialogs: settings (saved as they change) and the API key prompt.

import { DEFAULT_SETTINGS } from "./store.js";

const $ = (id) => document.getElementById(id);

export function initSettings(settings, save) {
  const dialog = $("settings");
  const fields = {
    model: $("set-model"),
    system: $("set-system"),
    temperature: $("set-temperature"),
    maxTokens: $("set-max-tokens"),
    allInOne: $("set-all-in-one"),
  };

  function show() {
    fields.system.value = settings.system;
    fields.temperature.value = String(settings.temperature);
    fields.maxTokens.value = String(settings.maxTokens);
    fields.allInOne.checked = Boolean(settings.allInOne);
    if (settings.model) fields.model.value = settings.model;
    $("temperature-value").textContent = Number(settings.temperature).toFixed(2);
  }

  function read() {
    settings.system = fields.system.value;
    settings.temperature = Number(fields.temperature.value);
    const max = Math.round(Number(fields.maxTokens.value));
    if (max >= 1) settings.maxTokens = max;
    settings.allInOne = fields.allInOne.checked;
    if (fields.model.value) settings.model = fields.model.value;
    $("temperature-value").textContent = settings.temperature.toFixed(2);
    save();
  }

  for (const field of Object.values(fields)) {
    field.addEventListener("input", read);
    field.addEventListener("change", read);
  }
  $("reset-settings").addEventListener("click", () => {
    Object.assign(settings, { ...DEFAULT_SETTINGS, model: settings.model });
    save();
    show();
  });
  $("open-settings").addEventListener("click", () => {
    show();
    dialog.showModal();
  });
  dialog.addEventListener("close", () => $("prompt").focus());
  show();
}

let pendingKey = null;

// Asks for the API key in a modal dialog (once at a time); resolves to the key or "".
export function askForKey() {
  $("key-cancel").onclick = () => $("key-dialog").close("cancel");
  pendingKey ??= new Promise((resolve) => {
    const dialog = $("key-dialog");
    const input = $("key-input");
    input.value = "";
    dialog.returnValue = "";
    dialog.addEventListener("close", () => {
      pendingKey = null;
      resolve(dialog.returnValue === "ok" ? input.value.trim() : "");
    }, { once: true });
    dialog.showModal();
    input.focus();
  });
  return pendingKey;
}
