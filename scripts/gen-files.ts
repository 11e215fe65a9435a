import * as fs from 'node:fs';
import * as path from 'node:path';

/**
 * Writes generated files under `root` (or, with check, only reports the stale
 * ones). Returns how many differ. Shared by the gen-* scripts.
 */
export function writeGenerated(root: string, files: Record<string, string>, check: boolean, label = (rel: string) => rel): number {
  let stale = 0;
  for (const [rel, content] of Object.entries(files)) {
    const file = path.join(root, rel);
    const current = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : undefined;
    if (current === content) continue;
    if (check) {
      console.error(`stale: ${label(rel)} (run npm run gen)`);
      stale++;
    } else {
      fs.mkdirSync(path.dirname(file), { recursive: true });
      fs.writeFileSync(file, content);
      console.log(`wrote ${label(rel)}`);
    }
  }
  return stale;
}
