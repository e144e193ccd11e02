// Talking to warmlm: health, models, classify and streamed chat completions (SSE over fetch).
// Every failure becomes an ApiError with an HTTP status (0 for the network) and a message
// written for people.

const KEY_SLOT = "warmlm.apiKey";

export class ApiError extends Error {
  constructor(status, message, { retryAfter = null, code = null } = {}) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
    this.code = code;
  }
}

export const apiKey = {
  get: () => sessionStorage.getItem(KEY_SLOT) || "",
  set: (key) => (key ? sessionStorage.setItem(KEY_SLOT, key) : sessionStorage.removeItem(KEY_SLOT)),
};

// Called on a 401: resolves to a key to retry with, or "" to give up. Set by the app.
let askForKey = async () => "";
export function onUnauthorized(ask) {
  askForKey = ask;
}

function headers(json) {
  const h = json ? { "Content-Type": "application/json" } : {};
  const key = apiKey.get();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

function friendly(status, serverMessage, retryAfter) {
  const wait = retryAfter ? ` Retrying is fine in ${retryAfter} s.` : "";
  switch (status) {
    case 0: return "Cannot reach the server. Check that warmlm is running.";
    case 401: return "The server needs an API key.";
    case 429: return `The server is busy: its queue is full.${wait || " Try again in a moment."}`;
    case 503: return `The model is not available right now (${serverMessage}).${wait}`;
    case 504: return "The request waited too long in the server's queue. Try again.";
    default: return serverMessage || `The server answered ${status}.`;
  }
}

async function errorFrom(response) {
  let message = response.statusText;
  let code = null;
  try {
    const body = await response.json();
    message = body?.error?.message || message;
    code = body?.error?.code || null;
  } catch { /* not JSON */ }
  const retryAfter = Number(response.headers.get("Retry-After")) || null;
  return new ApiError(response.status, friendly(response.status, message, retryAfter),
    { retryAfter, code });
}

// fetch with the API key; on a 401 asks for a key once and retries.
async function call(path, { method = "GET", body, signal } = {}) {
  for (let attempt = 0; ; attempt += 1) {
    let response;
    try {
      response = await fetch(path, {
        method,
        headers: headers(body !== undefined),
        body: body === undefined ? undefined : JSON.stringify(body),
        signal,
      });
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError(0, friendly(0));
    }
    if (response.status === 401 && attempt === 0) {
      const key = await askForKey();
      if (key) {
        apiKey.set(key);
        continue;
      }
    }
    if (!response.ok) throw await errorFrom(response);
    return response;
  }
}

export async function getHealth(signal) {
  const response = await call("/health", { signal });
  return response.json();
}

export async function getModels() {
  const response = await call("/v1/models");
  return (await response.json()).data.map((m) => m.id);
}

// {label, probabilities} for one text, or null when the server has no classify route.
export async function classify(input, labels, task) {
  try {
    const response = await call("/v1/classify", { method: "POST", body: { input, labels, task } });
    return (await response.json()).data[0];
  } catch (err) {
    if (err instanceof ApiError && [404, 405].includes(err.status)) return null;
    throw err;
  }
}

// Yields each parsed `data:` payload of an SSE response until [DONE].
async function* events(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let cut;
    while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
      const data = block.split(/\r?\n/).filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).trimStart()).join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      yield JSON.parse(data);
    }
  }
}

// Streams one chat completion. onDelta(text) per content piece; resolves to
// {finishReason, usage}. Aborting `signal` closes the connection (the server then stops).
export async function streamChat(request, { signal, onDelta }) {
  const body = { ...request, stream: true, stream_options: { include_usage: true } };
  const response = await call("/v1/chat/completions", { method: "POST", body, signal });
  let finishReason = null;
  let usage = null;
  try {
    for await (const chunk of events(response)) {
      if (chunk.error) {
        throw new ApiError(503, `The generation failed: ${chunk.error.message}`,
          { code: chunk.error.code });
      }
      if (chunk.usage) usage = chunk.usage;
      const choice = chunk.choices?.[0];
      if (choice?.delta?.content) onDelta(choice.delta.content);
      if (choice?.finish_reason) finishReason = choice.finish_reason;
    }
  } catch (err) {
    if (err.name === "AbortError" || err instanceof ApiError) throw err;
    throw new ApiError(0, "The connection to the server was lost during the reply.");
  }
  return { finishReason, usage };
}
