exports.handler = async () => { throw new TypeError("bad thing"); };
