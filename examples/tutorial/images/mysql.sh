#!/bin/sh
# The database stand-in: refuses to start without a root password, as the mysql image does,
# keeps its data (a count of its starts) in /var/lib/mysql, and answers on port 3306 (HTTP).
if [ -z "$MYSQL_ROOT_PASSWORD" ]; then
  echo "error: database is uninitialized and password option is not specified" >&2
  echo "  You need to specify one of MYSQL_ROOT_PASSWORD, MYSQL_ALLOW_EMPTY_PASSWORD and MYSQL_RANDOM_ROOT_PASSWORD" >&2
  exit 1
fi
data=/var/lib/mysql
mkdir -p "$data/www"
starts=$(( $(cat "$data/starts" 2>/dev/null || echo 0) + 1 ))
echo "$starts" >"$data/starts"
printf 'database %s, started %s times, args %s\n' "${MYSQL_DATABASE:-none}" "$starts" "$*" >"$data/www/index.html"
echo "mysqld ready for connections on port 3306 (start $starts)"
httpd -f -p 3306 -h "$data/www" &
server=$!
# As PID 1 the shell gets SIGTERM only through a handler: shut down when the Pod is deleted.
trap 'kill $server; echo "mysqld shutdown complete"; exit 0' TERM INT
wait $server
