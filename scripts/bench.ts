import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

/** `npm run bench -- NAME [args]` runs bench/NAME.ts in a fresh node with --expose-gc. */
const [name, ...args] = process.argv.slice(2);
const benchDir = path.join(__dirname, '..', 'bench');
const available = fs.readdirSync(benchDir).filter((f) => f.endsWith('.ts')).map((f) => f.slice(0, -3));
if (!name || !available.includes(name)) {
  console.error(`usage: npm run bench -- NAME   (one of: ${available.join(', ')})`);
  process.exit(2);
}
const r = spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', path.join(benchDir, `${name}.ts`), ...args], { stdio: 'inherit' });
process.exit(r.status ?? 1);
