export const nested = { fn: async () => "esm" };
