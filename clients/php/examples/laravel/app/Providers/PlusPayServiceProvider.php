<?php

declare(strict_types=1);

namespace App\Providers;

use Illuminate\Contracts\Foundation\Application;
use Illuminate\Support\ServiceProvider;
use PlusPay\Client;
use PlusPay\Config;

/**
 * Binds pluspay's client as a singleton made from config/pluspay.php: one broker connection
 * per PHP process, opened by the first command, reused by the next ones.
 * Register it in bootstrap/providers.php (Laravel 11) or config/app.php's `providers`.
 */
final class PlusPayServiceProvider extends ServiceProvider
{
    public function register(): void
    {
        $this->mergeConfigFrom(__DIR__ . '/../../config/pluspay.php', 'pluspay');
        $this->app->singleton(
            Client::class,
            static fn (Application $app): Client => new Client(Config::fromArray($app['config']['pluspay']))
        );
    }
}
