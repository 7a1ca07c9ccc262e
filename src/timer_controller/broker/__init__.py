"""RabbitMQ through aio-pika: the only room that imports it (docs/amqp.md)."""
