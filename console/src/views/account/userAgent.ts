// A user agent as a person recognises it ("Chrome 140 on Linux"); the full
// string stays available beside it.

const BROWSERS: ReadonlyArray<readonly [RegExp, string]> = [
  [/Edg(?:e|A|iOS)?\/(\d+)/, "Edge"],
  [/OPR\/(\d+)/, "Opera"],
  [/(?:Firefox|FxiOS)\/(\d+)/, "Firefox"],
  [/HeadlessChrome\/(\d+)/, "Headless Chrome"],
  [/(?:Chrome|CriOS)\/(\d+)/, "Chrome"],
  [/Version\/(\d+)[^ ]*(?: Mobile\/\S+)? Safari\//, "Safari"],
];

const SYSTEMS: ReadonlyArray<readonly [RegExp, string]> = [
  [/Windows NT/, "Windows"],
  // iOS user agents say "like Mac OS X": match them first.
  [/iPhone|iPad|iPod/, "iOS"],
  [/Mac OS X|Macintosh/, "macOS"],
  [/Android/, "Android"],
  [/CrOS/, "ChromeOS"],
  [/Linux/, "Linux"],
];

const LONGEST = 40;

/** "Firefox 128 on Windows", or the agent itself cut to a readable length. */
export function shortUserAgent(userAgent: string): string {
  const agent = userAgent.trim();
  if (agent === "") return "Unknown client";
  const browser = firstMatch(BROWSERS, agent, (name, version) => `${name} ${version}`);
  if (browser === undefined) return agent.length > LONGEST ? `${agent.slice(0, LONGEST - 1)}…` : agent;
  const system = firstMatch(SYSTEMS, agent, (name) => name);
  return system === undefined ? browser : `${browser} on ${system}`;
}

function firstMatch(
  table: ReadonlyArray<readonly [RegExp, string]>,
  agent: string,
  name: (label: string, version: string) => string,
): string | undefined {
  for (const [pattern, label] of table) {
    const match = pattern.exec(agent);
    if (match !== null) return name(label, match[1] ?? "");
  }
  return undefined;
}
