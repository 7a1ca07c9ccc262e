"""The broker as each loop sees it: the worker's side and the controller's side."""

from __future__ import annotations

from timer_controller.broker.client import BrokerClient, Handler


class WorkerLink:
    """Deliveries in, outcomes out (``runtime.worker.WorkerBroker``)."""

    def __init__(self, client: BrokerClient) -> None:
        self._client = client

    async def consume_deliveries(self, handler: Handler, *, prefetch: int) -> None:
        await self._client.consume(self._client.topology.deliveries, handler, prefetch=prefetch)

    async def stop_consuming(self) -> None:
        await self._client.stop_consuming()

    async def publish_outcome(self, body: bytes, *, message_id: str) -> None:
        await self._client.publish(self._client.topology.outcomes, body, message_id=message_id)


class ControllerLink:
    """Hand-offs out, outcomes in (``runtime.handoff.ControllerBroker``)."""

    def __init__(self, client: BrokerClient) -> None:
        self._client = client

    @property
    def connected(self) -> bool:
        return self._client.connected

    async def publish_handoff(self, body: bytes, *, message_id: str, expiration_s: float) -> None:
        await self._client.publish(
            self._client.topology.deliveries,
            body,
            message_id=message_id,
            expiration_s=expiration_s,
        )

    async def consume_outcomes(self, handler: Handler, *, prefetch: int) -> None:
        await self._client.consume(self._client.topology.outcomes, handler, prefetch=prefetch)

    async def stop_consuming(self) -> None:
        await self._client.stop_consuming()
