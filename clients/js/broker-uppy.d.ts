// TypeScript declarations for broker-uppy.js (options for @uppy/aws-s3 4.x).
import type { BrokerClient } from "./broker.js";

export interface BrokerUppyOptions {
  /** The bucket's multipart_threshold (default 100 MiB, the broker's default). */
  multipartThreshold?: number;
  /** The bucket's part_size (default 16 MiB, the broker's default). */
  partSize?: number;
  bucket?: string;
  /** A key, or one per Uppy file. */
  key?: string | ((file: { name?: string; type?: string; data: Blob }) => string);
  metadata?: Record<string, string>;
}

/** The options to pass to `uppy.use(AwsS3, …)`: getUploadParameters, createMultipartUpload,
 * signPart, listParts, completeMultipartUpload, abortMultipartUpload and the rest. */
export declare function brokerUppy(
  client: BrokerClient,
  options?: BrokerUppyOptions,
): Record<string, unknown>;
