#!/usr/bin/env bash
# Makes a self-signed development CA, a coordinator certificate (valid for
# localhost and 127.0.0.1) and client certificates whose common name is the
# device id, for TLS and mutual TLS on a test bench. Not for production:
# keys are unencrypted and the CA lives next to them.
#
# Usage: deploy/certs/make_dev_certs.sh OUT_DIR [DEVICE_ID...]
#   OUT_DIR/ca.{pem,key}, OUT_DIR/server.{pem,key},
#   OUT_DIR/client-DEVICE_ID.{pem,key} (default devices: device-0)
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: $0 OUT_DIR [DEVICE_ID...]" >&2
  exit 2
fi
out="$1"
shift
devices=("$@")
[ ${#devices[@]} -eq 0 ] && devices=(device-0)
mkdir -p "$out"
cd "$out"
days=825
quiet() { "$@" >/dev/null 2>&1 || { echo "make_dev_certs: '$*' failed" >&2; "$@"; exit 1; }; }

quiet openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem \
  -days "$days" -subj "/CN=fedge dev CA"

sign() {  # sign NAME CN EXT
  quiet openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$2"
  printf '%s\n' "$3" >"$1.ext"
  quiet openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
    -out "$1.pem" -days "$days" -extfile "$1.ext"
  rm -f "$1.csr" "$1.ext"
}
sign server "fedge coordinator" \
  "subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth"
for d in "${devices[@]}"; do
  sign "client-$d" "$d" \
    "subjectAltName=DNS:$d
extendedKeyUsage=clientAuth"
done
chmod 600 ./*.key
echo "make_dev_certs: wrote CA, server and ${#devices[@]} client certificate(s) to $out"
