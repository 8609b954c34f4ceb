#!/bin/sh
# The blog: serves /blog/index/ on port 8002 while its database answers, like the tutorial's
# Django app, whose health checks fail (and whose pod restarts) when MySQL cannot be reached.
mkdir -p /www/blog/index
page=/www/blog/index/index.html
check() {
  timeout 3 wget -q -O /dev/null "http://${MYSQL_HOST:-127.0.0.1}:${MYSQL_PORT:-3306}/" 2>/dev/null
}
while true; do
  if check; then
    printf '<h1>myblog %s</h1>\n<p>host %s, database %s:%s, user %s</p>\n' \
      "$VERSION" "$(hostname)" "${MYSQL_HOST:-127.0.0.1}" "${MYSQL_PORT:-3306}" "${MYSQL_USER:-root}" >"$page.new"
    mv "$page.new" "$page"
  else
    echo "database ${MYSQL_HOST:-127.0.0.1}:${MYSQL_PORT:-3306} unreachable" >&2
    rm -f "$page"
  fi
  sleep 2
done &
checker=$!
echo "myblog $VERSION listening on :8002"
httpd -f -p 8002 -h /www &
server=$!
# As PID 1 the shell gets SIGTERM only through a handler: stop at once when the Pod is deleted
# instead of waiting out the grace period.
trap 'kill $checker $server; exit 0' TERM INT
wait $server
