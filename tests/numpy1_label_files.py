"""The book's label format as numpy 1.26.4 wrote it (Python 3.11), pickle protocols 2 to 5, base64-encoded.

numpy 1.x names its modules `numpy.core` (2.x: `numpy._core`), and its `np.save` pickles with protocol 3;
the others are `pickle.dump` of the same 0-d object array after a `.npy` header, as older numpy and other
writers did. Made by this script in a numpy 1.26.4 environment, then pasted here (no `.npy` file is committed):

    import base64, io, pickle
    import numpy as np

    def save(protocol):
        wrapper = np.empty((), dtype=object)
        wrapper[()] = masks()
        stream = io.BytesIO()
        if protocol == 3:
            np.save(stream, masks(), allow_pickle=True)
        else:
            np.lib.format.write_array_header_1_0(stream, np.lib.format.header_data_from_array_1_0(wrapper))
            pickle.dump(wrapper, stream, protocol=protocol)
        return base64.b64encode(stream.getvalue()).decode()
"""

import base64

import numpy as np


def masks():
    """The dict the files hold: uint8, bool, Fortran-order float32 and a non-contiguous big-endian float64 view."""
    labels = np.array([[0, 1, 2], [2, 1, 0]])
    one_hot = np.eye(3, dtype=np.uint8)[labels]
    return {"a.png": one_hot, "b.png": one_hot.astype(bool), "c.png": np.asfortranarray(one_hot.astype(np.float32)),
            "d.png": one_hot.astype(">f8")[:, ::2]}


FILES = {
    2: (
        "k05VTVBZAQB2AHsnZGVzY3InOiAnfE8nLCAnZm9ydHJhbl9vcmRlcic6IEZhbHNlLCAnc2hhcGUnOiAoKSwgfSAgICAgICAgICAg"
        "ICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgIAqAAmNudW1weS5jb3JlLm11bHRpYXJy"
        "YXkKX3JlY29uc3RydWN0CnEAY251bXB5Cm5kYXJyYXkKcQFLAIVxAmNfY29kZWNzCmVuY29kZQpxA1gBAAAAYnEEWAYAAABsYXRp"
        "bjFxBYZxBlJxB4dxCFJxCShLASljbnVtcHkKZHR5cGUKcQpYAgAAAE84cQuJiIdxDFJxDShLA1gBAAAAfHEOTk5OSv////9K////"
        "/0s/dHEPYoldcRB9cREoWAUAAABhLnBuZ3ESaABoAUsAhXETaAeHcRRScRUoSwFLAksDSwOHcRZoClgCAAAAdTFxF4mIh3EYUnEZ"
        "KEsDaA5OTk5K/////0r/////SwB0cRpiiWgDWBIAAAABAAAAAQAAAAEAAAEAAQABAABxG2gFhnEcUnEddHEeYlgFAAAAYi5wbmdx"
        "H2gAaAFLAIVxIGgHh3EhUnEiKEsBSwJLA0sDh3EjaApYAgAAAGIxcSSJiIdxJVJxJihLA2gOTk5OSv////9K/////0sAdHEnYolo"
        "A1gSAAAAAQAAAAEAAAABAAABAAEAAQAAcShoBYZxKVJxKnRxK2JYBQAAAGMucG5ncSxoAGgBSwCFcS1oB4dxLlJxLyhLAUsCSwNL"
        "A4dxMGgKWAIAAABmNHExiYiHcTJScTMoSwNYAQAAADxxNE5OTkr/////Sv////9LAHRxNWKIaANYTgAAAAAAwoA/AAAAAAAAAAAA"
        "AAAAAAAAAAAAwoA/AAAAAAAAAAAAAMKAPwAAwoA/AAAAAAAAAAAAAAAAAADCgD8AAAAAAAAAAAAAwoA/AAAAAHE2aAWGcTdScTh0"
        "cTliWAUAAABkLnBuZ3E6aABoAUsAhXE7aAeHcTxScT0oSwFLAksCSwOHcT5oClgCAAAAZjhxP4mIh3FAUnFBKEsDWAEAAAA+cUJO"
        "Tk5K/////0r/////SwB0cUNiiWgDWGQAAAA/w7AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAD/DsAAAAAAA"
        "AAAAAAAAAAAAAAAAAAAAAAA/w7AAAAAAAAA/w7AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAcURoBYZxRVJxRnRxR2J1YXRxSGIu"
    ),
    3: (
        "k05VTVBZAQB2AHsnZGVzY3InOiAnfE8nLCAnZm9ydHJhbl9vcmRlcic6IEZhbHNlLCAnc2hhcGUnOiAoKSwgfSAgICAgICAgICAg"
        "ICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgIAqAA2NudW1weS5jb3JlLm11bHRpYXJy"
        "YXkKX3JlY29uc3RydWN0CnEAY251bXB5Cm5kYXJyYXkKcQFLAIVxAkMBYnEDh3EEUnEFKEsBKWNudW1weQpkdHlwZQpxBlgCAAAA"
        "TzhxB4mIh3EIUnEJKEsDWAEAAAB8cQpOTk5K/////0r/////Sz90cQtiiV1xDH1xDShYBQAAAGEucG5ncQ5oAGgBSwCFcQ9oA4dx"
        "EFJxEShLAUsCSwNLA4dxEmgGWAIAAAB1MXETiYiHcRRScRUoSwNoCk5OTkr/////Sv////9LAHRxFmKJQxIBAAAAAQAAAAEAAAEA"
        "AQABAABxF3RxGGJYBQAAAGIucG5ncRloAGgBSwCFcRpoA4dxG1JxHChLAUsCSwNLA4dxHWgGWAIAAABiMXEeiYiHcR9ScSAoSwNo"
        "Ck5OTkr/////Sv////9LAHRxIWKJQxIBAAAAAQAAAAEAAAEAAQABAABxInRxI2JYBQAAAGMucG5ncSRoAGgBSwCFcSVoA4dxJlJx"
        "JyhLAUsCSwNLA4dxKGgGWAIAAABmNHEpiYiHcSpScSsoSwNYAQAAADxxLE5OTkr/////Sv////9LAHRxLWKIQ0gAAIA/AAAAAAAA"
        "AAAAAAAAAAAAAAAAgD8AAAAAAAAAAAAAgD8AAIA/AAAAAAAAAAAAAAAAAACAPwAAAAAAAAAAAACAPwAAAABxLnRxL2JYBQAAAGQu"
        "cG5ncTBoAGgBSwCFcTFoA4dxMlJxMyhLAUsCSwJLA4dxNGgGWAIAAABmOHE1iYiHcTZScTcoSwNYAQAAAD5xOE5OTkr/////Sv//"
        "//9LAHRxOWKJQ2A/8AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAP/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        "P/AAAAAAAAA/8AAAAAAAAAAAAAAAAAAAAAAAAAAAAABxOnRxO2J1YXRxPGIu"
    ),
    4: (
        "k05VTVBZAQB2AHsnZGVzY3InOiAnfE8nLCAnZm9ydHJhbl9vcmRlcic6IEZhbHNlLCAnc2hhcGUnOiAoKSwgfSAgICAgICAgICAg"
        "ICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgIAqABJWJAgAAAAAAAIwVbnVtcHkuY29y"
        "ZS5tdWx0aWFycmF5lIwMX3JlY29uc3RydWN0lJOUjAVudW1weZSMB25kYXJyYXmUk5RLAIWUQwFilIeUUpQoSwEpaAOMBWR0eXBl"
        "lJOUjAJPOJSJiIeUUpQoSwOMAXyUTk5OSv////9K/////0s/dJRiiV2UfZQojAVhLnBuZ5RoAmgFSwCFlGgHh5RSlChLAUsCSwNL"
        "A4eUaAuMAnUxlImIh5RSlChLA2gPTk5OSv////9K/////0sAdJRiiUMSAQAAAAEAAAABAAABAAEAAQAAlHSUYowFYi5wbmeUaAJo"
        "BUsAhZRoB4eUUpQoSwFLAksDSwOHlGgLjAJiMZSJiIeUUpQoSwNoD05OTkr/////Sv////9LAHSUYolDEgEAAAABAAAAAQAAAQAB"
        "AAEAAJR0lGKMBWMucG5nlGgCaAVLAIWUaAeHlFKUKEsBSwJLA0sDh5RoC4wCZjSUiYiHlFKUKEsDjAE8lE5OTkr/////Sv////9L"
        "AHSUYohDSAAAgD8AAAAAAAAAAAAAAAAAAAAAAACAPwAAAAAAAAAAAACAPwAAgD8AAAAAAAAAAAAAAAAAAIA/AAAAAAAAAAAAAIA/"
        "AAAAAJR0lGKMBWQucG5nlGgCaAVLAIWUaAeHlFKUKEsBSwJLAksDh5RoC4wCZjiUiYiHlFKUKEsDjAE+lE5OTkr/////Sv////9L"
        "AHSUYolDYD/wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/8AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/8AAA"
        "AAAAAD/wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAJR0lGJ1YXSUYi4="
    ),
    5: (
        "k05VTVBZAQB2AHsnZGVzY3InOiAnfE8nLCAnZm9ydHJhbl9vcmRlcic6IEZhbHNlLCAnc2hhcGUnOiAoKSwgfSAgICAgICAgICAg"
        "ICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgIAqABZWhAgAAAAAAAIwVbnVtcHkuY29y"
        "ZS5tdWx0aWFycmF5lIwMX3JlY29uc3RydWN0lJOUjAVudW1weZSMB25kYXJyYXmUk5RLAIWUQwFilIeUUpQoSwEpaAOMBWR0eXBl"
        "lJOUjAJPOJSJiIeUUpQoSwOMAXyUTk5OSv////9K/////0s/dJRiiV2UfZQojAVhLnBuZ5SMEm51bXB5LmNvcmUubnVtZXJpY5SM"
        "C19mcm9tYnVmZmVylJOUKJYSAAAAAAAAAAEAAAABAAAAAQAAAQABAAEAAJRoC4wCdTGUiYiHlFKUKEsDaA9OTk5K/////0r/////"
        "SwB0lGJLAksDSwOHlIwBQ5R0lFKUjAViLnBuZ5RoFiiWEgAAAAAAAAABAAAAAQAAAAEAAAEAAQABAACUaAuMAmIxlImIh5RSlChL"
        "A2gPTk5OSv////9K/////0sAdJRiSwJLA0sDh5RoHXSUUpSMBWMucG5nlGgWKJZIAAAAAAAAAAAAgD8AAAAAAAAAAAAAAAAAAAAA"
        "AACAPwAAAAAAAAAAAACAPwAAgD8AAAAAAAAAAAAAAAAAAIA/AAAAAAAAAAAAAIA/AAAAAJRoC4wCZjSUiYiHlFKUKEsDjAE8lE5O"
        "Tkr/////Sv////9LAHSUYksCSwNLA4eUjAFGlHSUUpSMBWQucG5nlGgCaAVLAIWUaAeHlFKUKEsBSwJLAksDh5RoC4wCZjiUiYiH"
        "lFKUKEsDjAE+lE5OTkr/////Sv////9LAHSUYolDYD/wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/8AAA"
        "AAAAAAAAAAAAAAAAAAAAAAAAAAA/8AAAAAAAAD/wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAJR0lGJ1YXSUYi4="
    ),
}


def file_bytes(protocol: int) -> bytes:
    """The `.npy` file numpy 1.26.4 wrote with this pickle protocol."""
    return base64.b64decode(FILES[protocol])
