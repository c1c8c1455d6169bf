"""An example Python function (runtime: python3, handler: lamp.handler): a switch's
message, routed to the function by the group's table, sets the lamp through the table
and records the state in the lamp's Device Shadow."""

import json
import logging

import greengrasssdk

iot = greengrasssdk.client("iot-data")
log = logging.getLogger("lamp")


def handler(event, context):
    on = bool(event.get("on"))
    log.info("switch %s from %s on %s", "on" if on else "off", context.source,
             context.subject)
    iot.publish(topic="home/lamp/set", payload=json.dumps({"on": on}),
                queueFullPolicy="AllOrException")
    try:
        iot.update_thing_shadow(thingName="lamp",
                                payload=json.dumps({"state": {"desired": {"on": on}}}))
    except greengrasssdk.ShadowError as e:  # no shadow service routed: still switched
        log.warning("shadow not updated: %s", e)
    return {"on": on}
