/**
 * Messages between the main thread and the blob workers (src/repository/worker.ts).
 *
 * Workers do the CPU work (chunk, hash, compress, encrypt; decrypt, decompress, verify); the main thread
 * owns the index, the pack writer and the backend. A worker asks which chunks to store before encoding
 * them, so duplicate data costs a hash and nothing more. Encoded blobs are acknowledged once the pack writer
 * took them; a worker stops when too many of its bytes are unacknowledged, so a slow backend slows the
 * workers instead of filling memory, without a round trip per hand-over.
 */
import type { PackedBlob } from "./pack.js";

export interface WorkerInit {
  encryptKey: Uint8Array;
  idKey: Uint8Array;
  chunker: { minSize: number; avgSize: number; maxSize: number; seed: Uint8Array };
  compressionLevel: number;
}

export interface FileToChunk {
  path: string;
  /** Size from lstat, used only to plan buffer space; the file is read to its actual end. */
  size: number;
}

export interface EncodedBlob {
  id: string;
  /** The envelope in pieces, in order (see sealPieces). */
  pieces: Uint8Array[];
  rawLength: number;
}

export interface BlobToRestore {
  id: string;
  /** Offset of the blob in `data` of the restore message. */
  offset: number;
  length: number;
  rawLength: number;
  writes: BlobWrite[];
}

export interface PackVerification {
  headerError?: string;
  /** Blobs as the pack's own header lists them (empty when the header is unreadable). */
  blobs: PackedBlob[];
  blobErrors: { id: string; error: string }[];
}

export interface FileMetadata {
  mode: number;
  /** Seconds since the epoch, as utimes takes them. */
  mtime: number;
  /** Set only when running as root. */
  owner?: { uid: number; gid: number };
}

export interface BlobWrite {
  path: string;
  offset: number;
  /**
   * The file is this one blob: the worker creates it, writes, sizes it and sets its metadata with a single
   * open, instead of three (create, write, finish) spread over the restore.
   */
  whole?: { size: number; meta: FileMetadata };
}

/** Restore's file-system work, spread over the workers: creating pre-sized files, then setting metadata. */
export type FileOp =
  | { kind: "create"; path: string; size: number; meta?: FileMetadata }
  | ({ kind: "finish"; path: string } & FileMetadata);

export type ToWorker =
  | { op: "files"; job: number; ops: FileOp[] }
  | { op: "chunk"; job: number; files: FileToChunk[] }
  | { op: "decision"; job: number; store: Uint8Array }
  | { op: "ack"; job: number; bytes: number }
  | { op: "restore"; job: number; data: Uint8Array; blobs: BlobToRestore[]; skipZeroWrites: boolean }
  | { op: "verify"; job: number; name: string; data: Uint8Array };

export type FromWorker =
  | { op: "filesDone"; job: number; errors: { index: number; error: string; code?: string }[] }
  | { op: "ids"; job: number; ids: string[] }
  | { op: "blobs"; job: number; blobs: EncodedBlob[] }
  | { op: "file"; job: number; index: number; content: string[]; size: number; error?: string }
  | { op: "done"; job: number }
  | { op: "restored"; job: number; errors: { id: string; error: string }[]; bytesWritten: number }
  | { op: "verified"; job: number; result: PackVerification }
  | { op: "failed"; job: number; error: string };
