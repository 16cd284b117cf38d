// broker-uppy.js: Uppy's own S3 plugin (@uppy/aws-s3 4.x) uploading through the broker.
//
//   import { BrokerClient } from "https://files.example.com/static/broker.js";
//   import { brokerUppy } from "https://files.example.com/static/broker-uppy.js";
//   uppy.use(AwsS3, brokerUppy(new BrokerClient({ baseUrl, getToken }), { partSize }));
//
// Uppy decides which files go in parts and cuts them itself, so `multipartThreshold` and
// `partSize` must be the bucket's (GET /v1/buckets; the defaults are the broker's). A file
// sent whole is completed at the broker right after its PUT (in `uploadPartBytes`, the one
// step Uppy's simple path has after `getUploadParameters`).
import { BrokerError, putBlob, sendableHeaders } from "./broker.js";

const MiB = 1024 * 1024;

/** Options for `uppy.use(AwsS3, …)` backed by `client` (a BrokerClient). */
export function brokerUppy(client, {
  multipartThreshold = 100 * MiB, partSize = 16 * MiB, bucket, key, metadata,
} = {}) {
  const pending = new Map(); // broker file id → the file as last answered (its part URLs)
  const whole = new Map(); // signed URL of a file sent whole → its broker file id
  const declare = (file, extra) => client.declare(file.data, {
    bucket, key: typeof key === "function" ? key(file) : key, name: file.name,
    mimeType: file.type, metadata: { ...metadata }, ...extra,
  });

  async function partUrl(fileId, partNumber, signal) {
    let part = pending.get(fileId)?.upload?.parts?.find((p) => p.part_number === partNumber);
    if (!part) { // a resumed upload, or URLs past their expiry: sign it again
      const file = await client.call("POST", `/v1/files/${fileId}/parts`,
        { part_numbers: [partNumber] }, { signal });
      pending.set(fileId, file);
      part = file.upload.parts.find((p) => p.part_number === partNumber);
    }
    return part;
  }

  return {
    shouldUseMultipart: (file) => (file.size ?? 0) > multipartThreshold,
    getChunkSize: () => partSize,

    async getUploadParameters(file, { signal } = {}) {
      const declared = await declare(file, { signal });
      const { upload } = declared;
      if (!upload?.url) {
        throw new BrokerError({ code: "uppy.threshold_mismatch", message: "The broker "
          + "declared this file in parts: set multipartThreshold to the bucket's." });
      }
      whole.set(upload.url, declared.id);
      return { method: upload.method, url: upload.url, headers: sendableHeaders(upload.headers), fields: {} };
    },

    async uploadPartBytes({ signature: { url, headers, method }, body, onProgress, onComplete, signal }) {
      const etag = await putBlob({ url, method, headers }, body,
        (loaded) => onProgress?.({ loaded, lengthComputable: true }), signal);
      onComplete?.(etag);
      const fileId = whole.get(url);
      if (fileId === undefined) return { ETag: etag }; // a part: completed with the others
      whole.delete(url);
      const done = await client.call("POST", `/v1/files/${fileId}/complete`, {}, { signal });
      return { ETag: etag, location: done.download_url, file: done };
    },

    async createMultipartUpload(file) {
      const declared = await declare(file, { multipart: true });
      pending.set(declared.id, declared);
      return { uploadId: declared.id, key: declared.key };
    },

    async signPart(file, { uploadId, partNumber, signal }) {
      const part = await partUrl(uploadId, partNumber, signal);
      return { url: part.url, headers: sendableHeaders(part.headers) };
    },

    async listParts(file, { uploadId, signal }) {
      const held = await client.call("GET", `/v1/files/${uploadId}`, undefined, { signal });
      return (held.parts_received ?? []).map((p) => ({ PartNumber: p.part_number, Size: p.size, ETag: p.etag }));
    },

    async completeMultipartUpload(file, { uploadId, parts, signal }) {
      const body = { parts: parts.map((p) => ({ part_number: p.PartNumber, etag: p.ETag })) };
      const done = await client.call("POST", `/v1/files/${uploadId}/complete`, body, { signal });
      pending.delete(uploadId);
      return { location: done.download_url, file: done };
    },

    async abortMultipartUpload(file, { uploadId }) {
      pending.delete(uploadId);
      await client.call("POST", `/v1/files/${uploadId}/abort`);
    },
  };
}
