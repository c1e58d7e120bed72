"""The greeter service in Python, the Nameko twin of `examples/greeter`
(used by the AMQP bench to compare start-up time and idle memory):

    cd interop && .venv/bin/nameko run --config config.yaml greeter
"""
from nameko.events import EventDispatcher
from nameko.rpc import rpc


class Greeter:
    name = "greeter"

    dispatch = EventDispatcher()

    @rpc
    def hello(self, name):
        self.dispatch("greeted", {"name": name})
        return "Hello, {}!".format(name)
