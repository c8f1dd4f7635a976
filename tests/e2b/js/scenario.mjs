// The unmodified E2B JavaScript SDK against sandman's gateway: E2B_API_URL and
// E2B_SANDBOX_URL are the gateway, the API key is a Kubernetes ServiceAccount token. Run by
// tests/e2b.rs as `node scenario.mjs PLAIN POOLED KEY`; it prints the sandbox id, waits for a
// line on stdin (the test looks at the claim meanwhile), then prints "ok". The same scenario
// as scenario.py.
import assert from 'node:assert/strict'
import readline from 'node:readline'
import { CommandExitError, FilesystemEventType, Sandbox } from 'e2b'

const [plain, pooled, apiKey] = process.argv.slice(2)

async function eventually(what, check, seconds = 60) {
  const deadline = Date.now() + seconds * 1000
  for (;;) {
    if (await check()) return
    if (Date.now() > deadline) throw new Error(`${what}: not within ${seconds} s`)
    await new Promise((r) => setTimeout(r, 200))
  }
}

// From a warm pool: the claim takes the pool's Sandbox.
const warm = await Sandbox.create(pooled, { apiKey, timeoutMs: 600_000 })
assert.equal((await warm.commands.run('echo warm')).stdout, 'warm\n')
assert.ok(await warm.kill())

const sandbox = await Sandbox.create(plain, {
  apiKey,
  timeoutMs: 600_000,
  metadata: { suite: 'e2b', run: 'js' },
})
console.log(sandbox.sandboxId)
const lines = readline.createInterface({ input: process.stdin })
await new Promise((resolve) => lines.once('line', resolve))
lines.close()

// Commands: output and exit code, a failure with its stderr, env and cwd.
const hello = await sandbox.commands.run('echo hello')
assert.deepEqual([hello.stdout, hello.exitCode], ['hello\n', 0])
await assert.rejects(sandbox.commands.run('echo oops >&2; exit 3'), (e) => {
  assert.ok(e instanceof CommandExitError, `${e}`)
  assert.equal(e.exitCode, 3)
  assert.match(e.stderr, /oops/)
  return true
})
const greeting = await sandbox.commands.run('echo "$GREETING from $(pwd)"', {
  envs: { GREETING: 'hi' },
  cwd: '/tmp',
})
assert.equal(greeting.stdout, 'hi from /tmp\n')

// A background command, listed and killed.
const background = await sandbox.commands.run('sleep 600', { background: true })
assert.ok((await sandbox.commands.list()).some((p) => p.pid === background.pid))
assert.ok(await sandbox.commands.kill(background.pid))
await eventually('the killed command to leave the list', async () =>
  (await sandbox.commands.list()).every((p) => p.pid !== background.pid),
)

// Stdin.
const cat = await sandbox.commands.run('cat', { background: true, stdin: true })
await sandbox.commands.sendStdin(cat.pid, 'typed\n')
await sandbox.commands.closeStdin(cat.pid)
assert.equal((await cat.wait()).stdout, 'typed\n')

// Files: binary bytes kept exactly, list, makeDir, exists, rename, remove, and a watch.
const blob = new Uint8Array(256 * 257).map((_, i) => i % 256)
assert.ok(await sandbox.files.makeDir('/workspace/work'))
await sandbox.files.write('/workspace/work/blob.bin', blob.buffer)
const read = await sandbox.files.read('/workspace/work/blob.bin', { format: 'bytes' })
assert.deepEqual(Buffer.from(read), Buffer.from(blob))
assert.deepEqual(
  (await sandbox.files.list('/workspace/work')).map((e) => e.name),
  ['blob.bin'],
)
assert.ok(await sandbox.files.exists('/workspace/work/blob.bin'))
await sandbox.files.rename('/workspace/work/blob.bin', '/workspace/work/moved.bin')
assert.equal(await sandbox.files.exists('/workspace/work/blob.bin'), false)
await sandbox.files.remove('/workspace/work/moved.bin')
assert.equal(await sandbox.files.exists('/workspace/work/moved.bin'), false)
let seen = false
const watch = await sandbox.files.watchDir('/workspace/work', (event) => {
  if (
    event.name === 'seen.txt' &&
    [FilesystemEventType.CREATE, FilesystemEventType.WRITE].includes(event.type)
  )
    seen = true
})
await sandbox.files.write('/workspace/work/seen.txt', 'x')
await eventually('the watch to see the write', () => seen)
await watch.stop()

// Timeout, info, listing by metadata.
await sandbox.files.write('/workspace/kept.txt', 'kept across pause')
await sandbox.setTimeout(900_000)
const info = await sandbox.getInfo()
assert.equal(info.state, 'running')
assert.deepEqual(info.metadata, { suite: 'e2b', run: 'js' })
assert.ok(info.endAt.getTime() - Date.now() > 800_000, `${info.endAt}`)
const found = await Sandbox.list({ apiKey, query: { metadata: { suite: 'e2b' } } }).nextItems()
assert.deepEqual(
  found.map((s) => s.sandboxId),
  [sandbox.sandboxId],
)
assert.deepEqual(
  await Sandbox.list({ apiKey, query: { metadata: { suite: 'other' } } }).nextItems(),
  [],
)

// Pause, then connect: on a template that does not checkpoint, the files are kept.
assert.ok(await sandbox.pause())
assert.equal((await Sandbox.getInfo(sandbox.sandboxId, { apiKey })).state, 'paused')
assert.equal(await sandbox.pause(), false, 'a second pause says it was paused already')
const again = await Sandbox.connect(sandbox.sandboxId, { apiKey })
assert.equal(await again.files.read('/workspace/kept.txt'), 'kept across pause')
assert.equal((await again.getInfo()).state, 'running')
assert.deepEqual(await again.getMetrics(), [])

assert.ok(await again.kill())
console.log('ok')
