#!/usr/bin/env bash
# Makes the certificates the TLS tests use, with the openssl command, into DIR:
#   ca.pem ca.key             the test CA qpoold trusts (upstream.tls.ca_file)
#   other_ca.pem              a CA qpoold does not trust
#   server.pem server.key     valid, for localhost and 127.0.0.1, signed by ca
#   server2.pem server2.key   the same names, another key (certificate rotation)
#   expired.pem expired.key   signed by ca, valid 2020-01-01 .. 2020-01-02 (openssl ca -enddate)
#   wrong_name.pem .key       signed by ca, for wrong.invalid only
#   unknown_ca.pem .key       for localhost and 127.0.0.1, signed by other_ca
#   next.pem next.key         the same names, signed by other_ca: a node moved to a new CA
#   client.pem client.key     a client certificate signed by ca (mTLS)
# Usage: make_certs.sh DIR       Exit status 0 when every file was made.
set -euo pipefail
dir=$1
mkdir -p "$dir"
cd "$dir"
quiet() { "$@" >/dev/null 2>&1 || { echo "make_certs: failed: $*" >&2; "$@"; exit 1; }; }

new_ca() {  # name subject
  quiet openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -keyout "$1.key" -out "$1.pem" -subj "/CN=$2" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
}

# A key and CSR for `name`, then a certificate signed by CA `ca` for `san`; `extra` are more
# openssl ca options (dates).
issue() {  # name ca san [extra...]
  local name=$1 ca=$2 san=$3
  shift 3
  quiet openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$name.key" -out "$name.csr" -subj "/CN=$name"
  mkdir -p "db.$ca"
  : >"db.$ca/index.txt"
  [[ -f "db.$ca/serial" ]] || echo 1000 >"db.$ca/serial"
  cat >"db.$ca/ca.cnf" <<CNF
[ca]
default_ca = test
[test]
dir = db.$ca
database = \$dir/index.txt
serial = \$dir/serial
new_certs_dir = \$dir
certificate = $ca.pem
private_key = $ca.key
default_md = sha256
default_days = 30
policy = any
copy_extensions = none
unique_subject = no
[any]
commonName = supplied
[ext]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = $san
CNF
  quiet openssl ca -batch -config "db.$ca/ca.cnf" -extensions ext -notext \
    -in "$name.csr" -out "$name.pem" "$@"
  rm -f "$name.csr"
}

new_ca ca "qpool test CA"
new_ca other_ca "qpool untrusted CA"
issue server ca "DNS:localhost,IP:127.0.0.1"
issue server2 ca "DNS:localhost,IP:127.0.0.1"
issue expired ca "DNS:localhost,IP:127.0.0.1" -startdate 20200101000000Z -enddate 20200102000000Z
issue wrong_name ca "DNS:wrong.invalid"
issue unknown_ca other_ca "DNS:localhost,IP:127.0.0.1"
issue next other_ca "DNS:localhost,IP:127.0.0.1"
issue client ca "DNS:qpoold.client"
rm -rf db.ca db.other_ca
