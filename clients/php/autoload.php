<?php

declare(strict_types=1);

// For installs without Composer (Debian's php-amqplib): `require 'clients/php/autoload.php';`.
// With Composer, its own vendor/autoload.php does all of this instead.
//
// php-amqplib is taken from wherever it is already loaded, else from the file named by the
// environment variable PLUSPAY_AMQPLIB_AUTOLOAD, else from Debian's package.

if (!class_exists(\PhpAmqpLib\Connection\AMQPStreamConnection::class)) {
    $pluspayAmqplib = getenv('PLUSPAY_AMQPLIB_AUTOLOAD') ?: '/usr/share/php/PhpAmqpLib/autoload.php';
    if (!is_file($pluspayAmqplib)) {
        throw new \RuntimeException(
            "php-amqplib not found at $pluspayAmqplib: install Debian's php-amqplib, "
            . 'set PLUSPAY_AMQPLIB_AUTOLOAD, or use Composer'
        );
    }
    require_once $pluspayAmqplib;
    unset($pluspayAmqplib);
}

spl_autoload_register(static function (string $class): void {
    $prefix = 'PlusPay\\';
    if (strncmp($class, $prefix, strlen($prefix)) !== 0) {
        return;
    }
    $file = __DIR__ . '/src/' . str_replace('\\', '/', substr($class, strlen($prefix))) . '.php';
    if (is_file($file)) {
        require $file;
    }
});
