/**
 * A problem found in a config file, as data: where it is (file, line, column, field path), what is wrong and
 * what to do. Loading returns these; the CLI prints them with {@link formatDiagnostic}.
 */

export type ConfigPath = ReadonlyArray<string | number>;

export interface Position {
  /** 1-based. */
  line: number;
  /** 1-based. */
  column: number;
}

/** Maps a field path to where it is written in the file (undefined when it is not, e.g. a default). */
export type Locate = (path: ConfigPath) => Position | undefined;

export interface Diagnostic {
  severity: "error" | "warning";
  file: string;
  position?: Position;
  path: ConfigPath;
  /** What is wrong. */
  message: string;
  /** What to do about it. */
  remedy: string;
}

/** "targets.nas.labels.medium", "jobs.web.copies[1]". */
export function formatPath(path: ConfigPath): string {
  let out = "";
  for (const p of path) {
    if (typeof p === "number") out += `[${p}]`;
    else out += out === "" ? p : `.${p}`;
  }
  return out === "" ? "(top level)" : out;
}

/** `file:line:column field.path: what is wrong — what to do` (warnings say so after the position). */
export function formatDiagnostic(d: Diagnostic): string {
  const where = d.position ? `${d.file}:${d.position.line}:${d.position.column}` : d.file;
  const kind = d.severity === "warning" ? " warning:" : "";
  return `${where}${kind} ${formatPath(d.path)}: ${d.message} — ${d.remedy}`;
}

/** Makes a diagnostic at a field path: what is wrong, what to do. */
export type MakeDiagnostic = (path: ConfigPath, message: string, remedy: string) => Diagnostic;

export interface DiagnosticMakers {
  error: MakeDiagnostic;
  warning: MakeDiagnostic;
}

/** Builds diagnostics for one file, positioning each by the deepest written prefix of its path. */
export function diagnosticsFor(file: string, locate: Locate): DiagnosticMakers {
  const position = (path: ConfigPath): Position | undefined => {
    for (let n = path.length; n >= 0; n--) {
      const p = locate(path.slice(0, n));
      if (p) return p;
    }
    return undefined;
  };
  const make =
    (severity: Diagnostic["severity"]): MakeDiagnostic =>
    (path, message, remedy) => {
      const pos = position(path);
      return { severity, file, ...(pos ? { position: pos } : {}), path, message, remedy };
    };
  return { error: make("error"), warning: make("warning") };
}
