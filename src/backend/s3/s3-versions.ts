/**
 * Which stored version of an S3 key is Bulwark's, on a bucket with Object Lock (docs/design.md §21, "Tampering
 * on a versioned bucket").
 *
 * With the host's own S3 keys an attacker cannot delete or shorten a locked version, but can put a delete
 * marker or a new version over any key, so that a plain GET returns nothing or the attacker's bytes. Bulwark
 * writes every file of a repository once (names are content hashes or random; the config once at init; a
 * racing ifAbsent writer deletes its own losing version), so the rule is: the genuine version of a key is
 * its OLDEST version that is not a delete marker. A newer version cannot be made older, and the oldest cannot
 * be removed while its retention lasts, so nobody without admin rights can change which version that is.
 * Everything newer (versions and delete markers alike) is foreign. Lock files are outside the rule: they come
 * and go with every command and are never locked.
 *
 * The repository layer authenticates what it reads (AEAD on packs, indexes, snapshots, the config; the
 * master key's MAC in key files), so were the rule ever to pick a wrong version, reads would fail loudly
 * rather than return wrong data.
 */

export interface StoredVersion {
  readonly versionId: string;
  readonly deleteMarker: boolean;
  /** S3's IsLatest: this is what a plain GET would see. */
  readonly latest: boolean;
  readonly size: number;
  readonly lastModified?: Date;
}

export interface KeyVersions {
  /** The oldest version that is not a delete marker; undefined when the key holds only delete markers. */
  readonly genuine: StoredVersion | undefined;
  /** Every other version and delete marker, the current one first, then newest first. */
  readonly foreign: readonly StoredVersion[];
}

/**
 * Classifies the versions of one key. `versions` are the key's non-delete-marker versions in the order S3
 * lists them (newest first, which S3 guarantees); `markers` its delete markers, whose order relative to the
 * versions S3 only gives through LastModified and IsLatest (the SDK returns them in a separate list).
 */
export function classifyVersions(
  versions: readonly StoredVersion[],
  markers: readonly StoredVersion[],
): KeyVersions {
  const genuine = versions[versions.length - 1];
  const foreign = [...versions.slice(0, -1), ...markers];
  const time = (v: StoredVersion): number => v.lastModified?.getTime() ?? 0;
  // Stable: versions keep S3's newest-first order among equal times.
  foreign.sort((a, b) => Number(b.latest) - Number(a.latest) || time(b) - time(a));
  return { genuine, foreign };
}

/** Whether a key's current version is not Bulwark's (a delete marker or another version over it). */
export function isTampered(k: KeyVersions): boolean {
  return k.genuine !== undefined && k.foreign.length > 0;
}
