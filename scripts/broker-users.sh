#!/usr/bin/env bash
# The RabbitMQ permissions of each broker user role (docs/OPERATIONS.md, "Broker users").
#
#   broker-users.sh print ROLE USER [NAMESPACE] [VHOST]
#       Prints the rabbitmqctl command that gives USER exactly the permissions of ROLE.
#   broker-users.sh apply ROLE USER [NAMESPACE] [VHOST]
#       Runs it, with $RABBITMQCTL (split on spaces; default rabbitmqctl).
#
# ROLE: upstream (an API server), operator (the same permissions; the user must also be in
# security.operator_users), worker (`pluspay worker`, and `pluspay run`), webhooks
# (`pluspay webhooks`). NAMESPACE is amqp.namespace (default pluspay); VHOST defaults to /.
# The user must exist (rabbitmqctl add_user). Upstream and operator users own the queues
# named USER.<anything>, so their names have no dots and cannot cover pluspay's names.
set -euo pipefail

die() { echo "broker-users: $*" >&2; exit 2; }

if [ $# -lt 3 ] || [ $# -gt 5 ]; then
    die "usage: $0 print|apply ROLE USER [NAMESPACE] [VHOST]"
fi
action=$1 role=$2 user=$3 namespace=${4:-pluspay} vhost=${5:-/}

[[ $namespace =~ ^[A-Za-z0-9_.-]+$ ]] || die "namespace must be letters, digits, . _ -"
ns=${namespace//./\\.}   # a dot in a name is a literal dot in the regex

case $role in
    upstream | operator)
        [[ $user =~ ^[A-Za-z0-9_-]+$ ]] || die "an $role user's name is letters, digits, _ -"
        [ "$user" != amq ] || die "amq.* names are the broker's"
        if [ "$user" = "$namespace" ] || [[ $namespace == "$user".* ]]; then
            die "$user.* would cover pluspay's names"
        fi
        # Server-named queues (amq.gen-*, exclusive) and the user's own queues; the commands
        # exchange to publish to; the results and events exchanges to bind its queues to.
        configure="^(amq\\.gen-.*|$user\\..*)\$"
        write="^($ns\\.commands|amq\\.gen-.*|$user\\..*)\$"
        read="^($ns\\.(results|events)|amq\\.gen-.*|$user\\..*)\$"
        ;;
    worker)
        # The whole topology; replies to reply_to queues go through the default exchange.
        configure="^$ns\\.(commands|results|events|dead|webhooks)\$"
        write="^($ns\\.(commands|results|events|dead|webhooks)|amq\\.default)\$"
        read="^$ns\\.(commands|webhooks|dead)\$"
        ;;
    webhooks)
        # Only the webhooks and dead-letter exchanges and queues, which it declares.
        configure="^$ns\\.(webhooks|dead)\$"
        write="^$ns\\.(webhooks|dead)\$"
        read="^$ns\\.(webhooks|dead)\$"
        ;;
    *) die "unknown role $role (upstream, operator, worker, webhooks)" ;;
esac

case $action in
    print) printf "rabbitmqctl set_permissions -p %s %s '%s' '%s' '%s'\n" \
        "$vhost" "$user" "$configure" "$write" "$read" ;;
    apply)
        read -r -a ctl <<<"${RABBITMQCTL:-rabbitmqctl}"
        "${ctl[@]}" set_permissions -p "$vhost" "$user" "$configure" "$write" "$read" ;;
    *) die "unknown action $action (print, apply)" ;;
esac
