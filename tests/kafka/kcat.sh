#!/usr/bin/env bash
# kcat against a keel Kafka listener: -L lists the brokers and the topic; 10 000 keyed
# lines produced with acks=all are consumed back from the beginning (-C -e), identical
# and in order per partition.
#   tests/kafka/kcat.sh BOOTSTRAP [TOPIC]
# With KAFKA_CA=path/to/ca.pem it speaks TLS, trusting that CA.
set -euo pipefail
bootstrap=${1:?usage: kcat.sh BOOTSTRAP [TOPIC]}
topic=${2:-kcat-$(date +%s)}
n=10000
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: kcat: $*" >&2; exit 1; }
tls=()
if [ -n "${KAFKA_CA:-}" ]; then
  tls=(-X security.protocol=ssl -X ssl.ca.location="$KAFKA_CA")
fi

# Line i is key k(i mod 37), value v<i>: values say their input order.
seq 1 "$n" | awk '{ print "k" ($1 % 37) ":v" $1 }' >"$dir/in"
timeout 120 kcat "${tls[@]}" -b "$bootstrap" -P -t "$topic" -K: -X acks=all -l "$dir/in" 2>"$dir/produce.err" ||
  fail "produce: $(tail -3 "$dir/produce.err")"

timeout 30 kcat "${tls[@]}" -b "$bootstrap" -L >"$dir/meta" 2>&1 || fail "-L: $(tail -3 "$dir/meta")"
grep -Eq '^ [0-9]+ brokers:' "$dir/meta" || fail "-L lists no brokers: $(cat "$dir/meta")"
grep -Eq "^  broker [0-9]+ at [^ ]+:[0-9]+" "$dir/meta" || fail "-L lists no broker address: $(cat "$dir/meta")"
grep -q "topic \"$topic\" with" "$dir/meta" || fail "-L does not list $topic"
echo "ok: kcat -L lists $(grep -c '^  broker ' "$dir/meta") broker(s) and $topic"

timeout 120 kcat "${tls[@]}" -b "$bootstrap" -C -t "$topic" -o beginning -e -f '%p\t%o\t%k\t%s\n' >"$dir/out" 2>"$dir/consume.err" ||
  fail "consume: $(tail -3 "$dir/consume.err")"
got=$(wc -l <"$dir/out")
[ "$got" -eq "$n" ] || fail "consumed $got records, produced $n"
# The same records, key and value, as a multiset.
cut -f3,4 "$dir/out" | tr '\t' ':' | sort >"$dir/got.sorted"
sort "$dir/in" | cmp -s - "$dir/got.sorted" || fail "the consumed records differ from the produced ones"
# Per partition: offsets 0, 1, 2, ... and values in input order.
awk -F'\t' '
  { i = substr($4, 2) + 0
    if (($1 in last) && (i <= last[$1] || $2 != off[$1] + 1)) { print "partition " $1 " offset " $2 ": out of order"; bad = 1; exit }
    if (!($1 in last) && $2 != 0) { print "partition " $1 " starts at " $2; bad = 1; exit }
    last[$1] = i; off[$1] = $2 }
  END { exit bad }' "$dir/out" || fail "order per partition"
echo "ok: kcat produced and consumed $n keyed records, identical and in order per partition"
