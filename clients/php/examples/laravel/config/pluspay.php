<?php

// config/pluspay.php of the Laravel application: how to reach pluspay.

return [
    // One or more broker URLs, comma-separated; amqps:// for TLS.
    'urls' => env('PLUSPAY_AMQP_URLS', 'amqp://guest:guest@127.0.0.1:5672/%2f'),
    // The engine's amqp.namespace.
    'namespace' => env('PLUSPAY_AMQP_NAMESPACE', 'pluspay'),
    // The CA of the brokers' certificates (amqps:// only).
    'ca_file' => env('PLUSPAY_AMQP_CA_FILE'),
    // Seconds to wait for a command's result; keep it below the HTTP timeouts in front.
    'timeout' => (float) env('PLUSPAY_TIMEOUT', 10),
    'connect_timeout' => (float) env('PLUSPAY_CONNECT_TIMEOUT', 3),
];
