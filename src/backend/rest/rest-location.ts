/**
 * Parsing of vault locations, `rest:http(s)://host:port/[prefix/]`. Kept apart from rest-backend.ts so that
 * the registry can parse a location without loading the HTTP client.
 */
import { BulwarkError } from "../../core/errors.js";

/** `rest:http(s)://host:port/[prefix/]`; credentials in the URL are refused so they never reach a log. */
export function parseRestLocation(location: string): URL {
  const text = location.startsWith("rest:") ? location.slice("rest:".length) : location;
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new BulwarkError("USAGE", `invalid vault location (expected rest:http(s)://host:port/)`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new BulwarkError("USAGE", `invalid vault location ${url.protocol}//${url.host}: use http or https`);
  }
  if (url.username !== "" || url.password !== "") {
    throw new BulwarkError("USAGE", `put the vault token in BULWARK_REST_TOKEN, not in the location`, {
      hint: `use rest:${url.protocol}//${url.host}${url.pathname}`,
    });
  }
  url.search = "";
  url.hash = "";
  if (!url.pathname.endsWith("/")) url.pathname += "/";
  return url;
}
