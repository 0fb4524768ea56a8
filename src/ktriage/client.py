"""The Python SDK's public name: ``from ktriage.client import Client``. It lives next to the
broker's wire protocol (broker/client.py) and imports nothing of the server or the sensor."""

from ktriage.broker.client import AsyncClient, BrokerError, Client, Record

__all__ = ["AsyncClient", "BrokerError", "Client", "Record"]
