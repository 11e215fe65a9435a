import { generateKeyPairSync, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import forge from 'node-forge';

/**
 * The embedded cluster's certificates: a self-signed CA and a serving
 * certificate for 127.0.0.1/localhost, made on first start and reused after.
 * Keys come from Node's native generator (fast); node-forge only signs.
 * Go clients ignore the CN, so the names go in subjectAltName.
 */
export interface Pki {
  caCert: string;
  cert: string;
  key: string;
}

export function ensurePki(dir: string, extraNames: string[] = []): Pki {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const files = { caCert: 'ca.crt', caKey: 'ca.key', cert: 'server.crt', key: 'server.key' };
  const p = (f: string) => path.join(dir, f);
  if (fs.existsSync(p(files.cert)) && fs.existsSync(p(files.key)) && fs.existsSync(p(files.caCert))) {
    return { caCert: fs.readFileSync(p(files.caCert), 'utf8'), cert: fs.readFileSync(p(files.cert), 'utf8'), key: fs.readFileSync(p(files.key), 'utf8') };
  }
  const ca = keyPair();
  const caCert = certificate({
    subject: 'kubevm-ca',
    publicKey: ca.publicKey,
    signingKey: ca.privateKey,
    isCa: true,
    years: 10,
  });
  const srv = keyPair();
  const cert = certificate({
    subject: 'kubevm-apiserver',
    publicKey: srv.publicKey,
    signingKey: ca.privateKey,
    issuer: caCert,
    isCa: false,
    years: 2,
    names: ['localhost', '127.0.0.1', '::1', ...extraNames],
  });
  const caPem = forge.pki.certificateToPem(caCert);
  const certPem = forge.pki.certificateToPem(cert);
  fs.writeFileSync(p(files.caKey), forge.pki.privateKeyToPem(ca.privateKey), { mode: 0o600 });
  fs.writeFileSync(p(files.caCert), caPem);
  fs.writeFileSync(p(files.key), forge.pki.privateKeyToPem(srv.privateKey), { mode: 0o600 });
  fs.writeFileSync(p(files.cert), certPem);
  return { caCert: caPem, cert: certPem, key: forge.pki.privateKeyToPem(srv.privateKey) };
}

function keyPair(): { publicKey: forge.pki.rsa.PublicKey; privateKey: forge.pki.rsa.PrivateKey } {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  return {
    publicKey: forge.pki.publicKeyFromPem(publicKey) as forge.pki.rsa.PublicKey,
    privateKey: forge.pki.privateKeyFromPem(privateKey) as forge.pki.rsa.PrivateKey,
  };
}

function certificate(o: {
  subject: string;
  publicKey: forge.pki.rsa.PublicKey;
  signingKey: forge.pki.rsa.PrivateKey;
  issuer?: forge.pki.Certificate;
  isCa: boolean;
  years: number;
  names?: string[];
}): forge.pki.Certificate {
  const cert = forge.pki.createCertificate();
  cert.publicKey = o.publicKey;
  cert.serialNumber = '01' + randomBytes(15).toString('hex');
  const notBefore = new Date(Date.now() - 60_000);
  const notAfter = new Date(notBefore);
  notAfter.setFullYear(notAfter.getFullYear() + o.years);
  cert.validity.notBefore = notBefore;
  cert.validity.notAfter = notAfter;
  cert.setSubject([{ name: 'commonName', value: o.subject }]);
  cert.setIssuer(o.issuer ? o.issuer.subject.attributes : [{ name: 'commonName', value: o.subject }]);
  const ext: any[] = [
    { name: 'basicConstraints', cA: o.isCa, critical: true },
    o.isCa
      ? { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true }
      : { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ];
  if (!o.isCa) {
    ext.push({ name: 'extKeyUsage', serverAuth: true });
    ext.push({
      name: 'subjectAltName',
      altNames: (o.names ?? []).map((n) => (/^[\d.]+$|:/.test(n) ? { type: 7, ip: n } : { type: 2, value: n })),
    });
  }
  cert.setExtensions(ext);
  cert.sign(o.signingKey, forge.md.sha256.create());
  return cert;
}
