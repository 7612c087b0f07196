// The environment every benchmark runs both tools in (imported first by each
// script; the tools inherit it).
//
// NODE_EXTRA_CA_CERTS makes every Node process read and parse that file of
// certificates before any script runs. Some machines set it for all programs
// (this project's build machines point it at the system's 140 KB
// ca-certificates.crt): a tiny vdisk convert then took 0.08 s, against
// 0.04-0.05 s without it. It only extends the trust store of TLS clients,
// which no benchmark uses, and qemu-img has no counterpart, so it is left out
// unless --keep-ca-env is given (then both figures can be compared).
export const caEnvKept = process.argv.includes('--keep-ca-env');
export const caEnvDropped = !caEnvKept && process.env.NODE_EXTRA_CA_CERTS !== undefined;
if (caEnvDropped) {
  delete process.env.NODE_EXTRA_CA_CERTS;
  process.stderr.write('bench: NODE_EXTRA_CA_CERTS left out of the environment (see bench/env.mjs; --keep-ca-env keeps it)\n');
}
