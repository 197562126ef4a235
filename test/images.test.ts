import { expect, test } from 'bun:test'

// Builds the image of every roster service from docker/service.Dockerfile with podman on a locally
// assembled base (nothing can be pulled here), proves the Dockerfile refuses a build without
// SERVICE, runs each image with every dependency unreachable (liveness must not need them), checks
// /health, sends SIGTERM and requires exit 0 within 2 s. The table with each image's size is
// printed to the test output.
test(
  'every service image builds, answers /health and exits 0 on SIGTERM within 2 s',
  async () => {
    const child = Bun.spawn(['bash', 'scripts/images.sh'], {
      cwd: `${import.meta.dir}/..`,
      env: process.env,
      stdout: 'pipe',
      stderr: 'pipe',
    })
    const [code, stdout, stderr] = await Promise.all([
      child.exited,
      new Response(child.stdout).text(),
      new Response(child.stderr).text(),
    ])
    console.log(stdout.split('\n').slice(-12).join('\n'))
    if (code !== 0) console.error(stderr.split('\n').slice(-40).join('\n'))
    expect(code).toBe(0)
  },
  20 * 60_000,
)
