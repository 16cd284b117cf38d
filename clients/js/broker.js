// broker.js: upload to the broker from a browser, straight to storage.
// A dependency-free ES module, served by the broker at /static/broker.js.
//
//   import { BrokerClient, BrokerError } from "https://broker.example/static/broker.js";
//   const client = new BrokerClient({ baseUrl, getToken: async () => token, concurrency: 4 });
//   const file = await client.upload(blob, { name, onProgress: ({ loaded, total }) => {} });
//
// It declares the file (POST /v1/files), PUTs the bytes to the URL(s) the broker signed,
// with upload progress (XHR: fetch() reports none), parts in parallel with retries and
// backoff, resumes from what storage holds (parts_received) after a failure, and completes.

/** Headers a browser sets itself and refuses from a script (the Fetch standard's list). */
const FORBIDDEN = new Set([
  "accept-charset", "accept-encoding", "access-control-request-headers",
  "access-control-request-method", "connection", "content-length", "cookie", "cookie2",
  "date", "dnt", "expect", "host", "keep-alive", "origin", "referer", "te", "trailer",
  "transfer-encoding", "upgrade", "via",
]);

/** The largest file whose SHA-256 `sha256: true` computes (crypto.subtle holds it whole). */
export const MAX_SHA256_SIZE = 64 * 1024 * 1024;

/** An error of the broker (its envelope's code, message and request id), of storage, or of
 * the client itself (`network.failed`, `upload.aborted`, `storage.rejected`). */
export class BrokerError extends Error {
  constructor({ code, message, status = 0, requestId = null, details = {} }) {
    super(message);
    this.name = "BrokerError";
    this.code = code;
    this.status = status;
    this.requestId = requestId;
    this.details = details;
  }

  /** Whether trying the same request again may succeed. */
  get retryable() {
    return this.status === 0 && this.code !== "upload.aborted"
      || this.status === 408 || this.status === 429 || this.status >= 500;
  }
}

const sleep = (ms, signal) => new Promise((resolve, reject) => {
  const timer = setTimeout(resolve, ms);
  signal?.addEventListener("abort", () => { clearTimeout(timer); reject(aborted()); },
    { once: true });
});

const aborted = () => new BrokerError({ code: "upload.aborted", message: "The upload was aborted." });

/** Headers as the broker signed them, minus those a browser sets itself. */
export function sendableHeaders(headers = {}) {
  return Object.fromEntries(Object.entries(headers).filter(([name]) => {
    const lower = name.toLowerCase();
    return !FORBIDDEN.has(lower) && !lower.startsWith("proxy-") && !lower.startsWith("sec-");
  }));
}

/** A BrokerError from a response's status, body text and request id. */
function errorFrom(status, text, requestId, fallback) {
  try {
    const { error, request_id: id } = JSON.parse(text);
    if (error?.code) {
      return new BrokerError({ code: error.code, message: error.message, status,
        requestId: id ?? requestId, details: error.details ?? {} });
    }
  } catch { /* not the broker's envelope (S3 answers XML) */ }
  return new BrokerError({ code: fallback, message: `${fallback}: HTTP ${status} ${text.slice(0, 200)}`,
    status, requestId });
}

/** Runs `work` over `items`, at most `limit` at a time; the first failure stops the rest. */
async function pool(items, limit, work) {
  const queue = [...items];
  let failure = null;
  const worker = async () => {
    while (queue.length && !failure) {
      const item = queue.shift();
      try { await work(item); } catch (error) { failure ??= error; }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, queue.length)) }, worker));
  if (failure) throw failure;
}

async function sha256Hex(blob) {
  const digest = await crypto.subtle.digest("SHA-256", await blob.arrayBuffer());
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

export class BrokerClient {
  /**
   * @param {object} options
   * @param {string} options.baseUrl the broker, e.g. "https://files.example.com"
   * @param {string} [options.token] a browser token (POST /v1/tokens), or
   * @param {() => Promise<string>} [options.getToken] called for the first token and again
   *   when the broker answers 401 auth.expired_key
   * @param {number} [options.concurrency] parts in flight at once (4)
   * @param {number} [options.retries] attempts after the first, per request (4)
   * @param {number} [options.retryDelay] the first backoff in ms, doubled each time (500)
   */
  constructor({ baseUrl, token, getToken, concurrency = 4, retries = 4, retryDelay = 500 } = {}) {
    if (!baseUrl) throw new TypeError("BrokerClient: baseUrl is required");
    if (!token && !getToken) throw new TypeError("BrokerClient: token or getToken is required");
    this.baseUrl = String(baseUrl).replace(/\/+$/, "");
    this.getToken = getToken ?? null;
    this.concurrency = concurrency;
    this.retries = retries;
    this.retryDelay = retryDelay;
    this._token = token ?? null;
    this._pending = null;
  }

  /**
   * Upload a File or Blob; resolves to the broker's file object, status "complete".
   * Options: bucket, key, name, mimeType, metadata, sha256 (true: compute it; or the hex),
   * onProgress({loaded, total}), signal (AbortSignal: the upload is aborted at the broker
   * too), fileId (resume an earlier upload of this blob instead of declaring it again).
   */
  async upload(blob, options = {}) {
    const { signal, onProgress, fileId } = options;
    if (signal?.aborted) throw aborted();
    // The declaration runs to its end even if `signal` aborts meanwhile: the file it made
    // is then aborted below, rather than left pending.
    let file = fileId ? await this.call("GET", `/v1/files/${fileId}`, undefined, { signal })
      : await this.declare(blob, { ...options, signal: undefined });
    if (file.status === "complete") return file;
    const progress = new Progress(blob.size, onProgress);
    try {
      if (signal?.aborted) throw aborted();
      if (file.upload?.parts || file.parts_received) {
        file = await this._multipart(file, blob, progress, signal);
      } else {
        await this._put(file.upload, blob, (n) => progress.set(0, n), signal);
        file = await this.call("POST", `/v1/files/${file.id}/complete`, {}, { signal });
      }
    } catch (error) {
      if (signal?.aborted) {
        await this.call("POST", `/v1/files/${file.id}/abort`).catch(() => {});
        throw aborted();
      }
      throw error;
    }
    return file;
  }

  /** A fresh signed URL of a complete file that fetch() may read cross-origin:
   * resolves to {url, expires_at} (GET /v1/files/{id}/content?redirect=false). */
  downloadUrl(fileId, { signal } = {}) {
    return this.call("GET", `/v1/files/${fileId}/content?redirect=false`, undefined, { signal });
  }

  /** One call to the broker's API, JSON in and out, with the token; retried with backoff
   * when the network or the broker fails, once with a new token when it has expired. */
  async call(method, path, body, { signal, headers = {} } = {}) {
    let renewed = false;
    for (let attempt = 0; ; attempt++) {
      const token = await this._currentToken();
      try {
        return await this._fetchJson(method, path, body, { ...headers, Authorization: `Bearer ${token}` }, signal);
      } catch (error) {
        if (signal?.aborted) throw aborted();
        if (error.code === "auth.expired_key" && this.getToken && !renewed) {
          renewed = true;
          if (this._token === token) this._token = null; // unless another call renewed it
          attempt--;
          continue;
        }
        if (!error.retryable || attempt >= this.retries) throw error;
        await sleep(this._backoff(attempt), signal);
      }
    }
  }

  async _fetchJson(method, path, body, headers, signal) {
    const init = { method, headers: { ...headers }, signal };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(`${this.baseUrl}${path}`, init);
    } catch (error) {
      if (signal?.aborted) throw aborted();
      throw new BrokerError({ code: "network.failed", message: `${method} ${path}: ${error}` });
    }
    const text = await response.text();
    const requestId = response.headers.get("X-Request-Id");
    if (!response.ok) throw errorFrom(response.status, text, requestId, "broker.failed");
    return text ? JSON.parse(text) : null;
  }

  /** The token; one getToken() call at a time, shared by every upload in flight (a token
   * sees only the files it declared, so parallel uploads must not each get their own). */
  _currentToken() {
    if (this._token) return Promise.resolve(this._token);
    this._pending ??= Promise.resolve(this.getToken())
      .then((token) => { this._token = token; return token; })
      .finally(() => { this._pending = null; });
    return this._pending;
  }

  _backoff(attempt) {
    return this.retryDelay * 2 ** attempt * (0.5 + Math.random() / 2);
  }

  /** Declare a blob (POST /v1/files, with an Idempotency-Key): the pending file, with its
   * upload URL, or its parts (over the bucket's threshold, or with `multipart: true`). */
  async declare(blob, { bucket, key, name, mimeType, metadata, sha256, multipart, signal } = {}) {
    const body = {
      name: name ?? blob.name ?? "blob",
      size: blob.size,
      mime_type: mimeType || blob.type || "application/octet-stream",
    };
    if (bucket) body.bucket = bucket;
    if (key) body.key = key;
    if (metadata) body.metadata = metadata;
    if (multipart) body.multipart = true;
    if (typeof sha256 === "string") body.sha256 = sha256;
    else if (sha256 && blob.size <= MAX_SHA256_SIZE && globalThis.crypto?.subtle) {
      body.sha256 = await sha256Hex(blob);
    }
    const idempotency = { "Idempotency-Key": crypto.randomUUID?.() ?? `${Date.now()}-${Math.random()}` };
    return this.call("POST", "/v1/files", body, { signal, headers: idempotency });
  }

  /** Parts in parallel, each retried; after a round fails, what storage holds is kept
   * (parts_received), the missing parts are signed again, and only they are sent. */
  async _multipart(file, blob, progress, signal) {
    if (!file.upload?.parts) file = await this._resume(file.id, signal);
    const etags = new Map();
    for (let round = 0; ; round++) {
      for (const held of file.parts_received ?? []) {
        etags.set(held.part_number, held.etag);
        progress.set(held.part_number, held.size);
      }
      const missing = (file.upload?.parts ?? []).filter((part) => !etags.has(part.part_number));
      try {
        await pool(missing, this.concurrency, async (part) => {
          const bytes = blob.slice(part.offset, part.offset + part.size);
          const etag = await this._put(part, bytes, (n) => progress.set(part.part_number, n), signal);
          etags.set(part.part_number, etag);
        });
        break;
      } catch (error) {
        const expired = error.status === 403; // a part URL past its expiry: sign it again
        if (signal?.aborted || round >= this.retries || !(error.retryable || expired)) throw error;
        await sleep(this._backoff(round), signal);
        file = await this._resume(file.id, signal);
        etags.clear(); // storage's word (parts_received) from now on, never ours
        progress.sent.clear();
      }
    }
    const parts = [...etags].sort(([a], [b]) => a - b)
      .map(([part_number, etag]) => ({ part_number, etag }));
    return this.call("POST", `/v1/files/${file.id}/complete`, { parts }, { signal });
  }

  /** A pending multipart file as storage holds it (parts_received) with fresh URLs for
   * every part still missing (POST /v1/files/{id}/parts). */
  async _resume(fileId, signal) {
    const held = await this.call("GET", `/v1/files/${fileId}`, undefined, { signal });
    if (held.status !== "pending") return held;
    const signed = await this.call("POST", `/v1/files/${fileId}/parts`, {}, { signal });
    return { ...signed, parts_received: held.parts_received ?? signed.parts_received ?? [] };
  }

  /** PUT `body` to a signed URL with its headers, retried; resolves to storage's ETag. */
  async _put(target, body, onLoaded, signal) {
    for (let attempt = 0; ; attempt++) {
      try {
        return await putBlob(target, body, onLoaded, signal);
      } catch (error) {
        onLoaded(0);
        if (signal?.aborted) throw aborted();
        if (!error.retryable || attempt >= this.retries) throw error;
        await sleep(this._backoff(attempt), signal);
      }
    }
  }
}

/** Bytes sent so far, per part (0 for a single PUT), reported as {loaded, total}. */
class Progress {
  constructor(total, listener) {
    this.total = total;
    this.listener = listener;
    this.sent = new Map();
  }

  set(part, loaded) {
    this.sent.set(part, loaded);
    if (!this.listener) return;
    let sum = 0;
    for (const n of this.sent.values()) sum += n;
    this.listener({ loaded: Math.min(sum, this.total), total: this.total });
  }
}

/** One PUT of `body` to a signed URL with the headers a browser may send, through XHR for
 * upload progress (`onLoaded(bytes)`); resolves to storage's ETag. */
export function putBlob({ url, method = "PUT", headers }, body, onLoaded, signal) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    const onAbort = () => xhr.abort();
    xhr.open(method, url);
    for (const [name, value] of Object.entries(sendableHeaders(headers))) {
      xhr.setRequestHeader(name, value);
    }
    xhr.upload.onprogress = (event) => onLoaded(event.loaded);
    xhr.onload = () => {
      signal?.removeEventListener("abort", onAbort);
      if (xhr.status >= 200 && xhr.status < 300) {
        onLoaded(body.size);
        resolve(xhr.getResponseHeader("ETag"));
      } else {
        reject(errorFrom(xhr.status, xhr.responseText, xhr.getResponseHeader("X-Request-Id"),
          "storage.rejected"));
      }
    };
    xhr.onerror = xhr.ontimeout = () => {
      signal?.removeEventListener("abort", onAbort);
      reject(new BrokerError({ code: "network.failed", message: `${method} to storage failed (network or CORS)` }));
    };
    xhr.onabort = () => reject(aborted());
    signal?.addEventListener("abort", onAbort, { once: true });
    xhr.send(body);
  });
}
