// What an app writes against broker.d.ts and broker-uppy.d.ts; tsc --strict must accept it.
import { BrokerClient, BrokerError, type BrokerFile, sendableHeaders } from "../../clients/js/broker.js";
import { brokerUppy } from "../../clients/js/broker-uppy.js";

const client = new BrokerClient({ baseUrl: "https://files.example", getToken: async () => "bt_x", concurrency: 4 });
const controller = new AbortController();

export async function send(blob: Blob): Promise<string> {
  try {
    const file: BrokerFile = await client.upload(blob, {
      bucket: "default", key: "a/b.txt", name: "b.txt", metadata: { user: "42" }, sha256: true,
      onProgress: ({ loaded, total }) => console.log(loaded / total), signal: controller.signal,
    });
    const { url, expires_at } = await client.downloadUrl(file.id);
    return `${file.status} ${url} ${expires_at}`;
  } catch (error) {
    if (error instanceof BrokerError) return `${error.code} ${error.status} ${error.requestId} ${error.retryable}`;
    throw error;
  }
}

export const headers: Record<string, string> = sendableHeaders({ "Content-Length": "1" });
export const uppyOptions = brokerUppy(client, { multipartThreshold: 5 << 20, partSize: 5 << 20, key: (f) => f.name ?? "x" });
