// Calls to the Spec-2-Fractal API: the key from localStorage as a Bearer header, errors as
// ApiError (status, detail, Retry-After), and job events read with fetch() — EventSource
// cannot send an Authorization header.

const KEY_NAME = "spec2fractal.apiKey";
const errorListeners = new Set();
// The key each response's request carried, so a refusal can be told from a stale one.
const sentWith = new WeakMap();

export function getKey() {
  return localStorage.getItem(KEY_NAME) || "";
}

export function setKey(key) {
  if (key) localStorage.setItem(KEY_NAME, key);
  else localStorage.removeItem(KEY_NAME);
}

export class ApiError extends Error {
  constructor(status, detail, retryAfter = null, body = null) {
    super(typeof detail === "string" ? detail : describeDetail(detail));
    this.status = status;
    this.detail = detail;
    this.retryAfter = retryAfter;
    this.body = body;
  }

  // [{field, message, loc}] for a 422 whose entries name a body or query field.
  get fieldErrors() {
    if (!Array.isArray(this.detail)) return [];
    return this.detail.map((entry) => {
      const loc = Array.isArray(entry.loc) ? entry.loc : [];
      const start = loc[0] === "body" || loc[0] === "query" ? 1 : 0;
      return { field: loc[start] ?? null, loc: loc.slice(start), message: entry.msg || "invalid" };
    });
  }
}

function describeDetail(detail) {
  if (Array.isArray(detail)) return detail.map((entry) => entry.msg).join("; ");
  return detail == null ? "request failed" : String(detail);
}

// Called with every ApiError, so one place can explain 401, 429 and 503 to the person.
export function onApiError(listener) {
  errorListeners.add(listener);
}

function authHeaders(extra) {
  const headers = new Headers(extra || {});
  const key = getKey();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  return headers;
}

async function failure(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const error = new ApiError(response.status, body?.detail ?? response.statusText,
                             response.headers.get("Retry-After"), body);
  error.key = sentWith.get(response) ?? "";
  errorListeners.forEach((listener) => listener(error));
  return error;
}

async function send(path, { method = "GET", json, form, headers, signal } = {}) {
  const init = { method, headers: authHeaders(headers), signal };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers.set("Content-Type", "application/json");
  } else if (form !== undefined) {
    init.body = form; // the browser writes the multipart boundary itself
  }
  try {
    const response = await fetch(path, init);
    sentWith.set(response, (init.headers.get("Authorization") || "").replace(/^Bearer /, ""));
    return response;
  } catch (error) {
    if (error.name === "AbortError") throw error;
    const unreachable = new ApiError(0, "the server cannot be reached; is it running?");
    errorListeners.forEach((listener) => listener(unreachable));
    throw unreachable;
  }
}

// JSON in, JSON out; throws ApiError for any status outside 2xx.
export async function api(path, options = {}) {
  const response = await send(path, options);
  if (!response.ok) throw await failure(response);
  const type = response.headers.get("Content-Type") || "";
  return type.includes("json") ? { status: response.status, data: await response.json() }
                               : { status: response.status, data: null };
}

// An answer that is an image (POST /controls/preview), as a Blob; ApiError otherwise.
export async function apiBlob(path, options = {}) {
  const response = await send(path, options);
  if (!response.ok) throw await failure(response);
  return response.blob();
}

// An image's bytes (same origin: /files/...; S3: the presigned host, if its CORS allows).
export async function fetchBlob(url) {
  const response = await fetch(url);
  if (!response.ok) throw new ApiError(response.status, `the image could not be read (${response.status})`);
  return response.blob();
}

// Server-Sent Events from a fetch() body: yields {event, data, id} until the stream ends.
export async function* events(path, { signal, lastEventId } = {}) {
  const headers = { Accept: "text/event-stream" };
  if (lastEventId) headers["Last-Event-ID"] = lastEventId;
  const response = await send(path, { headers, signal });
  if (!response.ok) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = { event: "message", data: [], id: null };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      // A lone "\r" at the end may be the first half of "\r\n": wait for the next chunk.
      const lines = buffer.split(/\r\n|\r(?!$)|\n/);
      buffer = lines.pop();
      for (const line of lines) {
        if (line === "") {
          if (event.data.length) {
            yield { event: event.event, data: event.data.join("\n"), id: event.id };
          }
          event = { event: "message", data: [], id: null };
          continue;
        }
        if (line.startsWith(":")) continue; // a comment: the server's keep-alive ping
        const colon = line.indexOf(":");
        const name = colon < 0 ? line : line.slice(0, colon);
        let text = colon < 0 ? "" : line.slice(colon + 1);
        if (text.startsWith(" ")) text = text.slice(1);
        if (name === "event") event.event = text;
        else if (name === "data") event.data.push(text);
        else if (name === "id") event.id = text;
      }
    }
  } finally {
    reader.releaseLock();
  }
}
