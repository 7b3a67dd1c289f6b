from channels.generic.websocket import AsyncWebsocketConsumer


class ThreadConsumer(AsyncWebsocketConsumer):
    pass
