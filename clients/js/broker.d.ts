// TypeScript declarations for broker.js (the browser client of the broker).

/** The broker's file object (see the broker's API: POST /v1/files, GET /v1/files/{id}). */
export interface BrokerFile {
  id: string;
  object: "file";
  bucket: string;
  key: string;
  name: string;
  mime_type: string;
  size: number;
  sha256: string | null;
  metadata: Record<string, string>;
  status: "pending" | "complete" | "failed" | "aborted";
  offset: number;
  created_at: number;
  completed_at: number | null;
  expires_at: number | null;
  download_url: string | null;
  [field: string]: unknown;
}

export interface BrokerClientOptions {
  /** The broker, e.g. "https://files.example.com". */
  baseUrl: string;
  /** A browser token (POST /v1/tokens on your backend)... */
  token?: string;
  /** ...or a function that gets one: called first, and again on 401 auth.expired_key. */
  getToken?: () => Promise<string>;
  /** Parts in flight at once (default 4). */
  concurrency?: number;
  /** Attempts after the first, per request and per resume round (default 4). */
  retries?: number;
  /** The first backoff in ms, doubled after each failure, with jitter (default 500). */
  retryDelay?: number;
}

export interface UploadProgress {
  loaded: number;
  total: number;
}

export interface UploadOptions {
  bucket?: string;
  key?: string;
  /** Defaults to the File's name. */
  name?: string;
  /** Defaults to the Blob's type, else application/octet-stream. */
  mimeType?: string;
  metadata?: Record<string, string>;
  /** true: compute it with crypto.subtle (files up to MAX_SHA256_SIZE); or the hex digest. */
  sha256?: boolean | string;
  onProgress?: (progress: UploadProgress) => void;
  /** Aborting rejects with BrokerError "upload.aborted" and aborts the file at the broker. */
  signal?: AbortSignal;
  /** Resume an earlier upload of this same blob (a pending file's id) instead of declaring. */
  fileId?: string;
}

export interface SignedUrl {
  url: string;
  expires_at: number;
}

export declare const MAX_SHA256_SIZE: number;

/** The error envelope's code, message and request id; or the client's own codes:
 * "network.failed" (status 0: network or CORS), "upload.aborted", "storage.rejected". */
export declare class BrokerError extends Error {
  constructor(init: {
    code: string;
    message: string;
    status?: number;
    requestId?: string | null;
    details?: Record<string, unknown>;
  });
  readonly name: "BrokerError";
  readonly code: string;
  readonly status: number;
  readonly requestId: string | null;
  readonly details: Record<string, unknown>;
  /** Whether the same request may succeed if tried again (network, 408, 429, 5xx). */
  readonly retryable: boolean;
}

/** Headers as the broker signed them, minus those a browser sets itself (Content-Length…). */
export declare function sendableHeaders(headers?: Record<string, string>): Record<string, string>;

/** One PUT of `body` to a signed URL (XHR, for upload progress); resolves to the ETag. */
export declare function putBlob(
  target: { url: string; method?: string; headers?: Record<string, string> },
  body: Blob,
  onLoaded: (bytes: number) => void,
  signal?: AbortSignal,
): Promise<string | null>;

export declare class BrokerClient {
  constructor(options: BrokerClientOptions);
  /** POST /v1/files: the pending file with its upload URL, or its parts. */
  declare(
    file: Blob,
    options?: Omit<UploadOptions, "onProgress" | "fileId"> & { multipart?: boolean },
  ): Promise<BrokerFile>;
  /** Declare, PUT to storage (parts in parallel), complete: the file, status "complete". */
  upload(file: Blob, options?: UploadOptions): Promise<BrokerFile>;
  /** A fresh signed URL that fetch() may read cross-origin (GET …/content?redirect=false). */
  downloadUrl(fileId: string, options?: { signal?: AbortSignal }): Promise<SignedUrl>;
  /** One JSON call to the broker's API with the token (retried; token renewed once). */
  call<T = unknown>(
    method: string,
    path: string,
    body?: unknown,
    options?: { signal?: AbortSignal; headers?: Record<string, string> },
  ): Promise<T>;
}
