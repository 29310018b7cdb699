"""At-least-once delivery, and nothing about money: the guarded broker transport, the consumer,
dead letters, the task policy, and batching with its hand-over to the pool."""
