// broker-uppy.js: Uppy's own S3 plugin (@uppy/aws-s3 4.x) uploading through the broker.
//
//   import { BrokerClient } from "https://files.example.com/static/broker.js";
//   import { brokerUppy } from "https://files.example.com/static/broker-uppy.js";
//   uppy.use(AwsS3, brokerUppy(new BrokerClient({ baseUrl, getToken }), { partSize }));
//
// Every file goes as a multipart upload the broker declares (one part when small): Uppy's
// simple-PUT path has no step after the PUT, and the broker needs one (complete). Uppy cuts
// the parts itself, so `partSize` must be the bucket's `part_size` (GET /v1/buckets).
import { sendableHeaders } from "./broker.js";

const MiB = 1024 * 1024;

/** Options for `uppy.use(AwsS3, …)` backed by `client` (a BrokerClient). */
export function brokerUppy(client, { partSize = 16 * MiB, bucket, key, metadata } = {}) {
  const pending = new Map(); // broker file id → the file as last answered (its part URLs)

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
    shouldUseMultipart: () => true,
    getChunkSize: () => partSize,

    async createMultipartUpload(file) {
      const declared = await client.declare(file.data, {
        bucket, key: typeof key === "function" ? key(file) : key, name: file.name,
        mimeType: file.type, metadata: { ...metadata }, multipart: true,
      });
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
